"""The stages of one run, in the order ``lorazoo.train.runner`` calls them.

setup (the config parsed once into typed options) → claim (the run dir) → plan (input checks, task,
adapter fitted to the model, data) → build (model + adapter, Trainer) → training (train, evaluate) →
record (metrics.json, built once and extended).
"""
