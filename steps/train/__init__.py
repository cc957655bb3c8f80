"""Training: losses, the engine (train_one_epoch/evaluate), metrics, optimizers, checkpoints, the run loop."""
