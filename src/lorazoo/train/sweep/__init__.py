"""Sweeps on real engines: Optuna studies that outlive a process, Slurm attempts and the launcher, and how each job ended."""
