"""Search: Ray Tune + Optuna over LoRA recipes, ASHA early stopping, results from Ray's state.

``config`` (the sweep YAML), ``space`` (the Optuna search space and searcher), ``trial``
(one trial = one ``train_and_evaluate`` call), ``experiment`` (the Tune experiment: build,
resume, checks), ``results`` (trials.parquet, best.json, summary.md).
"""
