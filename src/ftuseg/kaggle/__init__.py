"""The offline Kaggle submission: packaging the kernel and its model dataset, the Kaggle CLI calls
(bundle), and the code that runs inside the kernel (runtime, kept free of training imports)."""
