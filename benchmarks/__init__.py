"""Benchmarks: lorazoo vs PEFT training steps, merged inference, θ_D reconstruction (results/benchmarks.md)."""
