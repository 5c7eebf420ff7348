"""The training engine: transformers.Trainer with the optimizer spec, checkpoints, divergence stop, curves, best-vs-last, train time, distributed keys and W&B."""
