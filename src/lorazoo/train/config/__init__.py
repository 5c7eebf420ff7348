"""Checking a composed config before anything loads: the schema of every key, preflight bounds, Hydra nodes derived from the projection files, and fitting paper defaults to the model."""
