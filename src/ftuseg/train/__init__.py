"""Training one model on one fold: crop datasets and loaders, the epoch loop, resume, DDP,
validation, and the domain-adaptation add-ons that hook into it (DANN, pseudo-labels)."""
