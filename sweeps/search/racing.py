"""Racing the finalists: the search's best feasible recipes, retrained with new seeds.

Every search trial trains with one seed, so the search's best trial is partly the luckiest
seed (the winner's curse). The ``racing.finalists`` best distinct recipes that keep every
budget are trained again with ``racing.seeds`` new seeds each, as trials of a second Tune
experiment beside the search's (``<sweep>-racing``: the same trainable, resources,
storage and resume); the winner is the finalist with the best mean select-set WER over all
its seeds whose mean WER increase keeps every budget. Only finalists whose race runs all
completed compete, and no winner is chosen while any race run is unfinished: a 1-seed WER
beside 3-seed means is not a fair race.
"""

from __future__ import annotations

import math
from typing import Any

from sweeps.budget import over_budget, within_budget
from sweeps.search.config import SweepConfig
from sweeps.search.trial import ERROR, STOPPED_EARLY
from trainable.config import TrialConfig, target_module_set_name
from trainable.metrics import PRIMARY_TUNED, metric_name, metric_value

RACING_SUFFIX = "-racing"
# Racing seeds are the trial seed + 1000, + 2000, ...: never a seed repro would pick by
# default (seed + 1 ... + N), so repro's seeds stay new to the recipe.
SEED_STRIDE = 1000
# A finalist's race: every race run completed; some not yet run (the race was interrupted);
# all ended but some failed (errored or without its final report: it cannot be compared).
RACE_COMPLETE, RACE_UNFINISHED, RACE_FAILED = "complete", "unfinished", "failed"
# A finalist only under other budgets than the race's (``--analyze NAME max_wer_increase...``):
# it has its search seed alone, and cannot be compared with the raced means.
NOT_RACED = "not raced"


def racing_seeds(seed: int, count: int) -> list[int]:
    return [seed + SEED_STRIDE * k for k in range(1, count + 1)]


def recipe_key(values: dict[str, Any], sweep: SweepConfig) -> tuple:
    """What tells recipes apart: their searched values (target modules by set name)."""
    key = []
    for name in sweep.searched_names:
        value = values[name]
        if name == "target_modules":
            value = target_module_set_name(tuple(value) if not isinstance(value, str) else TrialConfig(target_modules=value).target_modules)
        elif hasattr(value, "item"):
            value = value.item()
        key.append((name, round(value, 12) if isinstance(value, float) else value))
    return tuple(key)


def wer_increases(row: Any, sweep: SweepConfig) -> dict[str, float]:
    """Each budgeted eval set's WER increase (tuned - baseline) in a results row."""
    return {name: metric_value(row.get(metric_name(name, "tuned"))) - metric_value(row.get(metric_name(name, "baseline")))
            for name, _ in sweep.max_wer_increase}


def keeps_budgets(increases: dict[str, float], sweep: SweepConfig) -> bool:
    limits = dict(sweep.max_wer_increase)
    return all(math.isfinite(value) and not over_budget(value, limits[name]) for name, value in increases.items())


def choose_finalists(trials: Any, sweep: SweepConfig, completed: str) -> list[dict[str, Any]]:
    """The best ``racing.finalists`` distinct recipes among fully trained trials that keep
    every budget on their own seed, best select-set WER first."""
    if not len(trials):
        return []
    done = trials[(trials["status"] == completed) & trials[sweep.metric].notna() & within_budget(trials, sweep.max_wer_increase)]
    done = done.sort_values(sweep.metric, ascending=sweep.mode == "min", kind="stable")
    finalists, seen = [], set()
    for _, row in done.iterrows():
        key = recipe_key(row, sweep)
        if key in seen:
            continue
        seen.add(key)
        finalists.append(row.to_dict())
        if len(finalists) == sweep.racing.finalists:
            break
    return finalists


def race_recipes(finalists: list[dict[str, Any]], sweep: SweepConfig) -> list[dict[str, Any]]:
    """One Tune config per (finalist, new seed): the finalist's whole recipe with the seed
    changed. Mid-run evaluations are off: racing needs final WERs only, and no ASHA reads them.
    Target modules are named by set, as in the search's configs (the console shows them so)."""
    fixed = sweep.trial.resolved().to_dict()
    recipes = []
    for finalist in finalists:
        searched = {name: plain_value(finalist[name]) for name in sweep.searched_names}
        recipe = TrialConfig.from_dict({**fixed, **searched, "seed": int(finalist.get("seed", fixed["seed"]))}).to_dict()
        recipe["target_modules"] = target_module_set_name(recipe["target_modules"])
        for seed in racing_seeds(recipe["seed"], sweep.racing.seeds):
            recipes.append({key: value for key, value in recipe.items() if key not in ("output_dir", "num_threads")}
                           | {"seed": seed, "eval_every": 0})
    return recipes


def race_table(finalists: list[dict[str, Any]], race_trials: Any, sweep: SweepConfig, completed: str,
               raced: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per finalist: its seeds, select-set WER and budgeted WER increases per seed (the
    search trial's seed first), their means and sds, whether the means keep the budgets, and
    ``race_status``: whether its race runs all completed (``RACE_COMPLETE``), some are still
    to run (``RACE_UNFINISHED``: no race trial yet, pending, running or paused), all ended
    with some failed (``RACE_FAILED``), or it was never in the race (``NOT_RACED``).
    ``race_trials``: None when the race has not started. ``raced``: the finalists the race
    was run for (chosen under the sweep's own budgets; default ``finalists``)."""
    raced_keys = {recipe_key(f, sweep) for f in (finalists if raced is None else raced)}
    by_key: dict[tuple, list[dict]] = {recipe_key(f, sweep): [f] for f in finalists}
    ended = {key: 0 for key in by_key}
    if race_trials is not None and len(race_trials):
        for _, row in race_trials.iterrows():
            key = recipe_key(row, sweep)
            if key not in by_key:
                continue
            if row["status"] in (completed, STOPPED_EARLY, ERROR):
                ended[key] += 1
            if row["status"] == completed:
                by_key[key].append(row.to_dict())
    entries = []
    for key, runs in by_key.items():
        entry = _race_entry(runs, sweep)
        entry["race_runs"] = len(runs) - 1
        entry["race_status"] = (NOT_RACED if key not in raced_keys else RACE_COMPLETE if len(runs) - 1 >= sweep.racing.seeds
                                else RACE_FAILED if ended[key] >= sweep.racing.seeds else RACE_UNFINISHED)
        entries.append(entry)
    return entries


def unfinished_race_runs(entries: list[dict[str, Any]], sweep: SweepConfig) -> int:
    """Race runs not yet run to an end, over the finalists still racing."""
    return sum(sweep.racing.seeds - entry["race_runs"] for entry in entries if entry["race_status"] == RACE_UNFINISHED)


def race_winner(entries: list[dict[str, Any]], sweep: SweepConfig) -> dict[str, Any] | None:
    """The finalist with the best mean select-set WER among those whose race runs all
    completed and whose mean increases keep every budget; None when none does, and None
    while any finalist's race is unfinished (its missing seeds could change the answer)."""
    if any(entry.get("race_status") == RACE_UNFINISHED for entry in entries):
        return None
    feasible = [entry for entry in entries if entry["keeps_budgets"] and entry.get("race_status", RACE_COMPLETE) == RACE_COMPLETE]
    if not feasible:
        return None
    sign = 1 if sweep.mode == "min" else -1
    return min(feasible, key=lambda entry: sign * entry["mean_wer"])


def _race_entry(runs: list[dict[str, Any]], sweep: SweepConfig) -> dict[str, Any]:
    wers = [metric_value(run[PRIMARY_TUNED]) for run in runs]
    per_run = [wer_increases(run, sweep) for run in runs]
    increases = {name: [run_increases[name] for run_increases in per_run] for name, _ in sweep.max_wer_increase}
    mean_increases = {name: _mean(values) for name, values in increases.items()}
    return {
        "trial_id": runs[0]["trial_id"],
        "recipe": runs[0],
        "seeds": [int(run["seed"]) for run in runs],
        "wers": wers,
        "mean_wer": _mean(wers),
        "sd_wer": _sd(wers),
        "wer_increases": increases,
        "mean_wer_increases": mean_increases,
        "sd_wer_increases": {name: _sd(values) for name, values in increases.items()},
        "keeps_budgets": keeps_budgets(mean_increases, sweep),
    }


def plain_value(value: Any) -> Any:
    """numpy scalars/arrays from a results row (a DataFrame row) back to Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value.item() if hasattr(value, "item") else value


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _sd(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return math.nan
    mean = sum(finite) / len(finite)
    return math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
