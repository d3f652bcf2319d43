"""A sweep's results: ``trials.parquet``, ``best.json`` and ``summary.md`` under results/<sweep>/.

Everything is derived from Tune's saved experiment state and each trial's reports on disk,
never from live trials, so ``python -m sweeps.run --analyze NAME`` can rebuild the files
at any time (also mid-sweep, or after the Ray cluster is gone).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.budget import over_budget
from sweeps.search.config import SweepConfig
from trainable.config import TrialConfig, target_module_set_name
from trainable.config_io import ConfigError
from trainable.files import atomic_output, atomic_write_json, atomic_write_text
from trainable.metrics import PRIMARY_BASELINE, PRIMARY_TUNED, RUN_FIELDS, eval_set_names, metric_name, parse_metric_name, scores_by_eval_set

# Tune statuses, plus STOPPED_EARLY: terminated by ASHA before its final report.
COMPLETED, STOPPED_EARLY, ERROR = "TERMINATED", "STOPPED_EARLY", "ERROR"
_NODE_KEYS = ("node", "node_id", "node_ip")
_COUNT_COLUMNS = ("steps", "nonfinite_steps", "num_threads")


@dataclass(frozen=True)
class SweepResults:
    """What a finished (or interrupted) sweep produced, for printing and tests."""

    trials: Any  # pandas.DataFrame, one row per trial
    best: dict[str, Any] | None
    summary_markdown: str

    def count(self, status: str) -> int:
        return int((self.trials["status"] == status).sum()) if len(self.trials) else 0

    @property
    def unfinished(self) -> int:
        """Trials neither completed, stopped nor errored: the sweep was interrupted."""
        return len(self.trials) - sum(self.count(status) for status in (COMPLETED, STOPPED_EARLY, ERROR))


def write_results(experiment_path: str, results_dir: str | Path, sweep: SweepConfig, wall_seconds: float | None = None) -> SweepResults:
    """Read the experiment, then write the three result files atomically."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    trials = trials_table(experiment_path, sweep)
    best = best_trial(trials, sweep)
    summary = summary_markdown(trials, best, sweep, experiment_path, wall_seconds)
    with atomic_output(results_dir / "trials.parquet") as tmp:
        trials.to_parquet(tmp, index=False)
    best_path = results_dir / "best.json"
    if best is not None:
        atomic_write_json(best_path, best)
    elif best_path.exists():
        best_path.unlink()  # a stale winner from an earlier run of the same name would mislead
    atomic_write_text(results_dir / "summary.md", summary)
    return SweepResults(trials=trials, best=best, summary_markdown=summary)


def trials_table(experiment_path: str, sweep: SweepConfig):
    """One row per trial: id, the whole recipe, status, final and best WER, node, error."""
    import pandas as pd
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(experiment_path, default_metric=sweep.metric, default_mode=sweep.mode)
    histories = analysis.trial_dataframes
    rows = [trial_row(trial, histories.get(trial.trial_id), sweep) for trial in analysis.trials]
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values("trial_number", kind="stable").reset_index(drop=True)
        for column in _COUNT_COLUMNS:  # whole numbers that a trial without reports lacks
            table[column] = table[column].round().astype("Int64")
    return table


def trial_row(trial: Any, history: Any, sweep: SweepConfig) -> dict[str, Any]:
    """Flatten one Tune trial into a results row (works without a running Ray)."""
    last = dict(trial.last_result or {})
    trial_dir = Path(trial.path) if trial.path and "://" not in str(trial.path) else None
    row: dict[str, Any] = {"trial_id": trial.trial_id, "trial_number": _trial_float_or_nan(trial)}
    row["status"] = _status(trial.status, last)
    row.update(_recipe_columns(trial.config, trial_dir, last))
    row.update(_metric_columns(last, history, sweep))
    row["wall_seconds"] = _float_or_nan(last.get("time_total_s"))
    row["num_failures"] = int(getattr(trial.run_metadata, "num_failures", 0) or 0)
    row.update(_node_columns(last, trial_dir))
    row["error"] = _error_message(trial, trial_dir) if trial.status == ERROR else None
    row["trial_dir"] = str(trial.path)
    return row


def best_trial(trials: Any, sweep: SweepConfig) -> dict[str, Any] | None:
    """The completed trial with the best final metric, as ``best.json`` holds it.

    Only trials that trained to the end count: a trial ASHA stopped has a WER from partial
    training, and its recipe (``max_steps``) would not reproduce that number.
    """
    if not len(trials):
        return None
    done = trials[(trials["status"] == COMPLETED) & trials[sweep.metric].notna() & within_budget(trials, sweep)]
    if not len(done):
        return None
    row = done.sort_values(sweep.metric, ascending=sweep.mode == "min", kind="stable").iloc[0]
    return {
        "config": best_recipe(row, sweep).to_dict(),
        "metric": float(row[sweep.metric]),
        "metric_name": sweep.metric,
        "mode": sweep.mode,
        "trial_id": row["trial_id"],
        "baseline_wer": _float_or_nan(row.get(PRIMARY_BASELINE)),
        "tuned_wer": _float_or_nan(row.get(PRIMARY_TUNED)),
        "eval_sets": _per_eval_set(row),
        "max_wer_increase": dict(sweep.max_wer_increase),
        "sweep": sweep.name,
        "trial_dir": row["trial_dir"],
    }


def within_budget(trials: Any, sweep: SweepConfig) -> Any:
    """Per trial: does every budgeted eval set stay within its allowed WER increase?
    A trial without that eval set's scores (stopped early, errored) is not within it."""
    import pandas as pd

    keep = pd.Series(True, index=trials.index)
    for name, limit in sweep.max_wer_increase:
        tuned, baseline = (trials.get(metric_name(name, system)) for system in ("tuned", "baseline"))
        if tuned is None or baseline is None:
            return pd.Series(False, index=trials.index)
        increase = tuned - baseline
        keep &= increase.notna() & ~over_budget(increase, limit)
    return keep


def budget_text(sweep: SweepConfig) -> str:
    return ", ".join(f"{name} within +{100 * limit:g} points of its baseline" for name, limit in sweep.max_wer_increase)


def best_recipe(row: Any, sweep: SweepConfig) -> TrialConfig:
    """The sweep's recipe as written (relative paths travel) with the winner's searched values."""
    searched = {name: _plain(row[name]) for name in sweep.searched_names}
    if "target_modules" in searched:
        searched["target_modules"] = list(searched["target_modules"])
    return TrialConfig.from_dict({**sweep.trial.to_dict(), **searched, "output_dir": f"outputs/{sweep.name}-best"})


def summary_markdown(trials: Any, best: dict | None, sweep: SweepConfig, experiment_path: str, wall_seconds: float | None) -> str:
    """A short human report: counts, the winner next to the baseline, a leaderboard, errors."""
    out = io.StringIO()
    counts = {status: int((trials["status"] == status).sum()) if len(trials) else 0 for status in (COMPLETED, STOPPED_EARLY, ERROR)}
    out.write(f"# Sweep `{sweep.name}`\n\n")
    out.write(f"{len(trials)} trials: {counts[COMPLETED]} completed, {counts[STOPPED_EARLY]} stopped early, {counts[ERROR]} errored")
    other = len(trials) - sum(counts.values())
    out.write(f", {other} unfinished.\n\n" if other else ".\n\n")
    out.write(f"Metric: `{sweep.metric}` ({sweep.mode}), tuned WER on `{sweep.trial.primary_eval}`. Experiment: `{experiment_path}`\n\n")
    _write_timing(out, trials, wall_seconds, sweep.max_concurrent_trials)
    _write_best(out, best, trials, sweep)
    _write_leaderboard(out, trials, sweep)
    _write_errors(out, trials)
    return out.getvalue()


def describe_best(results: SweepResults, sweep: SweepConfig) -> str:
    """What the command line prints at the end: the winner and its WER beside the baseline."""
    trials, best = results.trials, results.best
    head = (
        f"Sweep {sweep.name}: {len(trials)} trials, {results.count(COMPLETED)} completed, "
        f"{results.count(STOPPED_EARLY)} stopped early, {results.count(ERROR)} errored."
    )
    if best is None:
        return head + "\n" + _no_best_reason(trials, sweep) + "; see summary.md."
    searched = ", ".join(f"{name}={value}" for name, value in searched_values(best, sweep).items())
    lines = [head, f"Best trial {best['trial_id']}: {searched}"]
    if sweep.max_wer_increase:
        within = _count_within_budget(trials, sweep)
        lines[-1] += f" (best of {within} completed trial{'' if within == 1 else 's'} with {budget_text(sweep)})"
    for name, scores in best["eval_sets"].items():
        lines.append(f"  {name:>10} WER: tuned {_pct(scores.get('tuned_wer'))} vs baseline {_pct(scores.get('baseline_wer'))}")
    return "\n".join(lines)


def searched_values(best: dict[str, Any], sweep: SweepConfig) -> dict[str, str]:
    """The winner's searched fields for display, target modules by set name ("qkvo")."""
    values = {}
    for name in sweep.searched_names:
        value = best["config"][name]
        values[name] = target_module_set_name(tuple(value)) if name == "target_modules" else _format(value)
    return values


def _trial_float_or_nan(trial: Any) -> int:
    """1-based order in which the searcher proposed the trial: Tune's search generator
    starts each experiment tag with its counter ("1_learning_rate=...")."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return int(head) if head.isdigit() else 0


def _status(status: str, last: dict[str, Any]) -> str:
    if status == COMPLETED and not last.get("completed", False):
        return STOPPED_EARLY
    return status


def _recipe_columns(config: dict[str, Any], trial_dir: Path | None, last: dict[str, Any]) -> dict[str, Any]:
    """Every TrialConfig field, as the trial ran it (its own output folder and threads)."""
    recipe = dict(config)
    if trial_dir:
        recipe.setdefault("output_dir", str(trial_dir / "run"))
    recipe.setdefault("num_threads", last.get("num_threads"))
    try:
        values = TrialConfig.from_dict(recipe).to_dict()
    except ConfigError:
        values = recipe  # keep what Tune holds rather than lose the row
    modules = tuple(values.get("target_modules") or ())
    values["target_modules"] = list(modules)
    values["eval_manifests"] = [f"{name}={path}" for name, path in values.get("eval_manifests", [])]
    values["target_module_set"] = target_module_set_name(modules)
    return values


def _metric_columns(last: dict[str, Any], history: Any, sweep: SweepConfig) -> dict[str, Any]:
    """Final WERs (every eval set, normalised and orthographic) and the best intermediate one."""
    metrics: dict[str, Any] = {name: _float_or_nan(last.get(name)) for name in (PRIMARY_TUNED, PRIMARY_BASELINE)}
    for key, value in last.items():
        if parse_metric_name(key):
            metrics[key] = _float_or_nan(value)
    for key in RUN_FIELDS:
        metrics[key] = _float_or_nan(last.get(key))
    metrics["steps"] = _float_or_nan(last.get("steps", last.get("step")))
    metrics["completed"] = bool(last.get("completed", False))
    metrics.update(_best_of_history(history, sweep))
    return metrics


def _best_of_history(history: Any, sweep: SweepConfig) -> dict[str, Any]:
    best = {f"best_{sweep.metric}": math.nan, f"best_{sweep.metric}_step": None}
    if history is None or sweep.metric not in getattr(history, "columns", ()):
        return best
    scores = history[[sweep.metric] + (["step"] if "step" in history.columns else [])].dropna(subset=[sweep.metric])
    if not len(scores):
        return best
    index = scores[sweep.metric].idxmin() if sweep.mode == "min" else scores[sweep.metric].idxmax()
    best[f"best_{sweep.metric}"] = float(scores.loc[index, sweep.metric])
    if "step" in scores.columns:
        best[f"best_{sweep.metric}_step"] = int(scores.loc[index, "step"])
    return best


def _node_columns(last: dict[str, Any], trial_dir: Path | None) -> dict[str, Any]:
    """From the last report; a trial that failed before reporting left its node in attempts.jsonl."""
    nodes = {key: last.get(key) for key in _NODE_KEYS}
    if nodes["node"] is None and trial_dir is not None:
        attempts = trial_dir / "attempts.jsonl"
        if attempts.is_file():
            lines = attempts.read_text().splitlines()
            if lines:
                latest = json.loads(lines[-1])
                nodes["node"], nodes["node_id"] = latest.get("node"), latest.get("node_id")
    nodes["node_ip"] = nodes["node_ip"] or last.get("node_ip")
    return nodes


def _error_message(trial: Any, trial_dir: Path | None) -> str:
    """From Tune's error.txt: the ``TrialFailed`` line (one line that says it all), or else
    the last line of the traceback."""
    name = getattr(trial.run_metadata, "error_filename", None) or "error.txt"
    if trial_dir is None or not (trial_dir / name).is_file():
        return "errored (no error.txt found)"
    lines = [line.strip() for line in (trial_dir / name).read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if "TrialFailed: " in line:
            return line.split("TrialFailed: ", 1)[1]
    return lines[-1] if lines else "errored (empty error.txt)"


def _per_eval_set(row: Any) -> dict[str, dict[str, float]]:
    return {name: {key: _float_or_nan(value) for key, value in scores.items()} for name, scores in scores_by_eval_set(row).items()}


def _write_timing(out: io.StringIO, trials: Any, wall_seconds: float | None, concurrency: int) -> None:
    if not len(trials):
        return
    trial_seconds = float(trials["wall_seconds"].fillna(0).sum())
    out.write(f"Trial time: {trial_seconds:.0f} s summed over trials")
    if wall_seconds:
        ideal = trial_seconds / concurrency
        out.write(f"; sweep wall time {wall_seconds:.0f} s; overhead ratio {wall_seconds / ideal:.2f}" if ideal else "")
        out.write(f" (wall / (trial time / {concurrency} concurrent))")
    out.write(".\n\n")


def _no_best_reason(trials: Any, sweep: SweepConfig) -> str:
    completed = int((trials["status"] == COMPLETED).sum()) if len(trials) else 0
    if completed and sweep.max_wer_increase:
        return f"No completed trial kept {budget_text(sweep)} ({completed} completed), so there is no best config"
    return "No trial completed, so there is no best config"


def _count_within_budget(trials: Any, sweep: SweepConfig) -> int:
    return int(((trials["status"] == COMPLETED) & within_budget(trials, sweep)).sum())


def _write_best(out: io.StringIO, best: dict | None, trials: Any, sweep: SweepConfig) -> None:
    if best is None:
        out.write(f"**{_no_best_reason(trials, sweep)}.**\n\n")
        return
    out.write(f"## Best: trial `{best['trial_id']}`\n\n")
    if sweep.max_wer_increase:
        completed = int((trials["status"] == COMPLETED).sum())
        out.write(f"Chosen among the {_count_within_budget(trials, sweep)} of {completed} completed trials "
                  f"with {budget_text(sweep)} (`max_wer_increase`).\n\n")
    for name, value in searched_values(best, sweep).items():
        out.write(f"- `{name}` = `{value}`\n")
    out.write("\n| eval set | baseline WER | tuned WER | baseline orth. | tuned orth. |\n|---|---|---|---|---|\n")
    for name, s in best["eval_sets"].items():
        out.write(f"| {name} | {_pct(s.get('baseline_wer'))} | {_pct(s.get('tuned_wer'))} | "
                  f"{_pct(s.get('baseline_orthographic_wer'))} | {_pct(s.get('tuned_orthographic_wer'))} |\n")
    out.write("\n`best.json` holds the whole recipe: `python -m trainable.run --config results/"
              f"{sweep.name}/best.json` trains it again.\n\n")


def _write_leaderboard(out: io.StringIO, trials: Any, sweep: SweepConfig) -> None:
    if not len(trials):
        return
    # Beside the optimised WER, every other eval set's tuned WER (e.g. a canary): the best
    # held-out trial may be the one that forgets most, and the reader should see it here.
    others = [name for name in eval_set_names(trials.columns) if name != sweep.trial.primary_eval]
    columns = ["trial_number", "trial_id", "status", *[n if n != "target_modules" else "target_module_set" for n in sweep.searched_names],
               sweep.metric, f"best_{sweep.metric}", PRIMARY_BASELINE, *[metric_name(name, "tuned") for name in others],
               "steps", "wall_seconds", "node"]
    board = trials.sort_values([sweep.metric], ascending=sweep.mode == "min", na_position="last", kind="stable")
    out.write("## Trials\n\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for _, row in board.iterrows():
        out.write("| " + " | ".join(_format(row.get(column)) for column in columns) + " |\n")
    out.write("\n")


def _write_errors(out: io.StringIO, trials: Any) -> None:
    failed = trials[trials["status"] == ERROR] if len(trials) else trials
    if not len(failed):
        return
    out.write("## Errors\n\n")
    for _, row in failed.iterrows():
        out.write(f"- `{row['trial_id']}`: {row['error']}\n")
    out.write("\n")


def _float_or_nan(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _plain(value: Any) -> Any:
    """numpy scalars/arrays from a DataFrame row back to Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value.item() if hasattr(value, "item") else value


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _pct(value: Any) -> str:
    number = _float_or_nan(value)
    return "-" if math.isnan(number) else f"{100 * number:.2f}%"
