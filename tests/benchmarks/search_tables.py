"""Hand-made search tables for the replay tests: rows with planted curves and canary rises."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from benchmarks.search.table import SearchTable, recipe_id

SEARCH = {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "target_modules": {"choices": ["qv", "qkvo", "fc"]}}
EVAL_EVERY = 50
CANARY_BASELINE = 0.10


def run_row(params: dict[str, Any], curve: list[float], seed: int = 42, canary_rise: float = 0.0, completed: bool = True) -> dict[str, Any]:
    """One trained (recipe, seed): a report every EVAL_EVERY steps, the last one final."""
    steps = [EVAL_EVERY * (i + 1) for i in range(len(curve))]
    return {
        "recipe": recipe_id(params), **params, "seed": seed, "completed": completed,
        "curve_steps": steps, "dev_wer_curve": list(curve),
        "dev_tuned_wer": curve[-1] if completed else float("nan"), "dev_baseline_wer": 0.6,
        "canary_tuned_wer": CANARY_BASELINE + canary_rise if completed else float("nan"), "canary_baseline_wer": CANARY_BASELINE,
        "steps": steps[-1], "seconds": 1.0, "sweep": "test", "trial_id": f"{recipe_id(params)}/{seed}",
    }


def curve_to(final: float, reports: int = 4, start: float = 0.6) -> list[float]:
    """A learning curve falling from ``start`` to ``final`` over ``reports`` eval reports."""
    return [float(start + (final - start) * (i + 1) / reports) for i in range(reports)]


def make_table(rows: list[dict[str, Any]], search: dict | None = None, points: list[dict] = (), budget: float = 0.02,
               num_samples: int = 4, grace_period: int = 2, reduction_factor: float = 2.0) -> SearchTable:
    import pandas as pd

    reports = max(len(row["dev_wer_curve"]) for row in rows)
    meta = {
        "search": search or SEARCH, "points_to_evaluate": list(points), "num_samples": num_samples,
        "scheduler": {"type": "asha", "grace_period": grace_period, "reduction_factor": reduction_factor},
        "max_reports": reports, "eval_every": EVAL_EVERY, "max_steps": EVAL_EVERY * reports, "sweep_seed": 42,
        "canary_budget": budget, "dev_eval_set": "heldout", "canary_eval_set": "canary",
    }
    return SearchTable(pd.DataFrame(rows), meta)


def grid(learning_rates=(1e-4, 1e-3, 1e-2), modules=("qv", "qkvo", "fc")) -> list[dict[str, Any]]:
    return [{"learning_rate": lr, "target_modules": m} for lr, m in itertools.product(learning_rates, modules)]


def synthetic_table(seed: int = 0, learning_rates: int = 4, extra_seed_recipes: int = 16) -> SearchTable:
    """A demo-shaped table (learning rate x rank x alpha x module set; curves at 4 reports;
    seed noise; forgetting that grows with the gain), for the CLI and timing checks."""
    rng = np.random.default_rng(seed)
    search = {
        "learning_rate": {"low": 3e-4, "high": 3e-3, "log": True},
        "lora_r": {"choices": [4, 8, 16]}, "lora_alpha": {"choices": [8, 16, 32]},
        "target_modules": {"choices": ["qv", "qkvo", "qkvo+fc", "fc"]},
    }
    lrs = [float(f"{v:.3g}") for v in np.geomspace(3e-4, 3e-3, learning_rates)]
    quality = {"qv": 0.03, "qkvo": 0.01, "qkvo+fc": 0.0, "fc": 0.005}
    rows, finals = [], {}
    for lr, r, alpha, modules in itertools.product(lrs, [4, 8, 16], [8, 16, 32], quality):
        params = {"learning_rate": lr, "lora_r": r, "lora_alpha": alpha, "target_modules": modules}
        final = 0.30 + 0.04 * np.log(lr / 1e-3) ** 2 + quality[modules] + 0.01 * abs(np.log2(alpha / r) - 1) + rng.normal(0, 0.01)
        finals[recipe_id(params)] = (params, final)
    best = sorted(finals, key=lambda k: finals[k][1])[:extra_seed_recipes]
    for key, (params, final) in finals.items():
        for seed in [42] + ([43, 44] if key in best else []):
            noisy = final + (rng.normal(0, 0.01) if seed != 42 else 0.0)
            curve = [float(noisy + (0.6 - noisy) * np.exp(-1.2 * i) + rng.normal(0, 0.01)) for i in range(1, 4)] + [float(noisy)]
            rise = 0.02 + 0.5 * (0.315 - noisy) + rng.normal(0, 0.005)  # better dev WER, more forgetting
            rows.append(run_row(params, curve, seed=seed, canary_rise=float(rise)))
    points = [{"learning_rate": 1e-3, "lora_r": 8, "lora_alpha": 16, "target_modules": "fc"}]
    return make_table(rows, search=search, points=points, num_samples=8)
