"""Getting data into the competition layout: the input contract, import of your own annotations,
the embedded sample, synthetic slides, and the prepare stage (training-scale arrays, folds)."""
