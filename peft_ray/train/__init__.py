"""Training: the per-worker recipe (train_func) and the driver that launches it."""
