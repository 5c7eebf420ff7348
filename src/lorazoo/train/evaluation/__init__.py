"""Evaluation: task metrics, the sweep objective, and lm-evaluation-harness on the adapted model."""
