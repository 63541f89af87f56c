"""Choosing the ensemble on out-of-fold predictions: the OOF stage, the weight and per-organ
threshold search, and the gallery of OOF overlays."""
