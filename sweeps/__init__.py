"""Sweeps over LoRA recipes (Ray Tune + Optuna) and seed-level reproducibility checks."""
