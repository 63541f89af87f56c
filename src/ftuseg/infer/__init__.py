"""Prediction: the tiled multi-scale engine, probability maps and post-processing, the ensemble a
prediction runs (members, weights, thresholds), submissions and whole-slide prediction."""
