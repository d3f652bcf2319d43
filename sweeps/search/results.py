"""A sweep's results: ``trials.parquet``, ``best.json`` and ``summary.md`` under results/<sweep>/.

Everything is derived from Tune's saved experiment state and each trial's reports on disk,
never from live trials, so ``python -m sweeps.run --analyze NAME`` can rebuild the files
at any time (also mid-sweep, or after the Ray cluster is gone).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.budget import within_budget
from sweeps.data_report import summary_section
from sweeps.search.config import SweepConfig, results_column
from sweeps.search.experiment import TrialConcurrency, has_saved_state
from sweeps.search.racing import RACING_SUFFIX, choose_finalists, plain_value, race_table, race_winner, unfinished_race_runs
from sweeps.search.summary import race_unfinished_note, resume_command, summary_markdown, unended_trials, unfinished_trials
from sweeps.search.trial import COMPLETED, COMPLETED_KEY, ERROR, STOPPED_EARLY
from trainable.config import TrialConfig, target_module_set_name
from trainable.config_io import ConfigError
from trainable.files import atomic_output, atomic_write_json, atomic_write_text
from trainable.metrics import PRIMARY_BASELINE, PRIMARY_TUNED, RUN_FIELDS, metric_value, parse_metric_name, scores_by_eval_set

_NODE_KEYS = ("node", "node_id", "node_ip")
_COUNT_COLUMNS = ("steps", "nonfinite_steps", "num_threads")


@dataclass(frozen=True)
class SweepResults:
    """What a finished (or interrupted) sweep produced, for printing and tests."""

    trials: Any  # pandas.DataFrame, one row per search trial
    best: dict[str, Any] | None
    summary_markdown: str
    race: list[dict[str, Any]] | None = None  # the raced finalists (sweeps.search.racing.race_table)
    unfinished_search: int | None = None  # search trials not run to an end (None: count them in ``trials``)
    unfinished_race: int = 0  # race runs not run to an end

    def count(self, status: str) -> int:
        return int((self.trials["status"] == status).sum()) if len(self.trials) else 0

    @property
    def unfinished(self) -> int:
        """Search trials and race runs neither completed, stopped nor errored (or not yet
        started): the sweep was interrupted, and ``--resume`` finishes it."""
        search = unended_trials(self.trials) if self.unfinished_search is None else self.unfinished_search
        return search + self.unfinished_race


def write_results(
    experiment_path: str, results_dir: str | Path, sweep: SweepConfig, wall_seconds: float | None = None, trials: Any = None,
    sweep_as_run: SweepConfig | None = None, concurrency: TrialConcurrency | None = None,
) -> SweepResults:
    """Read the search (and the race of its finalists, when there was one), choose the
    winner, then write trials.parquet, racing.parquet, best.json and summary.md atomically.
    ``trials``: the search's trials table when the caller already read it (``trials_table``
    of the same, finished experiment), so it is not read again. ``sweep_as_run``: the sweep
    as it ran, when ``sweep`` chooses under other budgets (``--analyze NAME
    max_wer_increase...``): its budgets chose the finalists that were raced. ``concurrency``:
    how many trials could run at once (``TrialConcurrency``), for the overhead ratio."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    if trials is None:
        trials = trials_table(experiment_path, sweep)
    race_trials = _race_trials(experiment_path + RACING_SUFFIX, sweep)
    unfinished_search = unfinished_trials(trials, sweep)
    race = None
    unfinished_race = 0
    if sweep.racing.enabled and not unfinished_search:  # the race starts once the search has ended
        as_run = sweep_as_run or sweep
        raced = choose_finalists(trials, as_run, COMPLETED)
        race = race_table(choose_finalists(trials, sweep, COMPLETED), race_trials, sweep, COMPLETED, raced=raced)
        # The race as run: under other budgets ``race`` shows other finalists than were raced.
        as_raced = race if sweep_as_run is None else race_table(raced, race_trials, as_run, COMPLETED)
        unfinished_race = unfinished_race_runs(as_raced, as_run)
    best = best_trial(trials, sweep, race) if not unfinished_race else None
    best_file = best_file_record(best, sweep, unfinished_search + unfinished_race, race)
    if best is not None:
        best = best_file
    summary = summary_markdown(trials, best, sweep, experiment_path, wall_seconds, race, results_dir, race_trials,
                               concurrency) + summary_section(results_dir)
    for name, table in (("trials.parquet", trials), ("racing.parquet", race_trials)):
        if table is not None:
            with atomic_output(results_dir / name) as tmp:
                table.to_parquet(tmp, index=False)
    best_path = results_dir / "best.json"
    if best_file is not None:
        atomic_write_json(best_path, best_file)
    elif best_path.exists():
        best_path.unlink()  # a stale winner from an earlier run of the same name would mislead
    atomic_write_text(results_dir / "summary.md", summary)
    return SweepResults(trials=trials, best=best, summary_markdown=summary, race=race,
                        unfinished_search=unfinished_search, unfinished_race=unfinished_race)


def best_file_record(best: dict[str, Any] | None, sweep: SweepConfig, unfinished: int,
                     race: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """What best.json holds: the winner with ``complete: true``; for an unfinished sweep,
    ``complete: false``, the count of unfinished trials and race runs and the command that
    finishes it, beside the best so far of an interrupted search, or alone (no recipe) while
    the race is unfinished, so repro refuses it rather than take another sweep's best.json.
    None: a finished sweep with no winner (the file is removed)."""
    if not unfinished:
        return None if best is None else best | {"complete": True}
    marker = {"complete": False, "unfinished": unfinished, "resume": resume_command(sweep)}
    if best is not None:
        return best | marker | {"note": f"Best so far of an unfinished sweep ({unfinished} unfinished), not its winner."}
    record = {"sweep": sweep.name, **marker, "note": race_unfinished_note(sweep, unfinished) if race else
              f"The sweep is unfinished ({unfinished} unfinished) and no trial has completed yet: no recipe is chosen."}
    if race:
        record["race"] = {"seeds_per_finalist": sweep.racing.seeds + 1, "finalists": [_race_record(entry, sweep) for entry in race]}
    return record


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
            table[column] = pd.to_numeric(table[column], errors="coerce").round().astype("Int64")
    return table


def trial_row(trial: Any, history: Any, sweep: SweepConfig) -> dict[str, Any]:
    """Flatten one Tune trial into a results row (works without a running Ray)."""
    last = dict(trial.last_result or {})
    trial_dir = Path(trial.path) if trial.path and "://" not in str(trial.path) else None
    row: dict[str, Any] = {"trial_id": trial.trial_id, "trial_number": _trial_number(trial)}
    row["status"] = _status(trial.status, last)
    row.update(_recipe_columns(trial.config, trial_dir, last))
    row.update(_metric_columns(last, history, sweep))
    row["wall_seconds"] = metric_value(last.get("time_total_s"))
    row["num_failures"] = int(getattr(trial.run_metadata, "num_failures", 0) or 0)
    row.update(_node_columns(last, trial_dir))
    row["error"] = _error_message(trial, trial_dir) if trial.status == ERROR else None
    row["trial_dir"] = str(trial.path)
    return row


def best_trial(trials: Any, sweep: SweepConfig, race: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The winner, as ``best.json`` holds it: with a race, the finalist with the best mean
    over its seeds whose mean WER increases keep the budgets; without one, the fully trained
    trial within the budgets with the best final metric.

    Only trials that trained to the end count: a trial ASHA stopped has a WER from partial
    training, and its recipe (``max_steps``) would not reproduce that number.
    """
    if race:
        entry = race_winner(race, sweep)
        return None if entry is None else _best_record(entry["recipe"], sweep, entry["mean_wer"], race) | {
            "chosen_by": "racing", "selection_seeds": entry["seeds"]}
    if not len(trials):
        return None
    done = trials[(trials["status"] == COMPLETED) & trials[sweep.metric].notna() & within_budget(trials, sweep.max_wer_increase)]
    if not len(done):
        return None
    row = done.sort_values(sweep.metric, ascending=sweep.mode == "min", kind="stable").iloc[0]
    return _best_record(row, sweep, float(row[sweep.metric])) | {"chosen_by": "single seed", "selection_seeds": [int(row.get("seed", sweep.trial.seed))]}


def _best_record(row: Any, sweep: SweepConfig, metric: float, race: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """best.json: the recipe, its scores on the search trial's seed, how it was chosen, the
    budgets, and the eval-set roles repro reads (select_on, confirm_on, selection_seeds)."""
    confirm = {"name": sweep.confirm_on[0][0], "path": sweep.confirm_on[0][1]} if sweep.confirm_on else None
    record = {
        "config": best_recipe(row, sweep).to_dict(),
        "metric": metric,
        "metric_name": sweep.metric,
        "mode": sweep.mode,
        "trial_id": row["trial_id"],
        "baseline_wer": metric_value(row.get(PRIMARY_BASELINE)),
        "tuned_wer": metric_value(row.get(PRIMARY_TUNED)),
        "eval_sets": _per_eval_set(row),
        "max_wer_increase": dict(sweep.max_wer_increase),
        "select_on": sweep.select_on,
        "confirm_on": confirm,
        "sweep": sweep.name,
        "trial_dir": row["trial_dir"],
    }
    if race:
        record["race"] = {"seeds_per_finalist": sweep.racing.seeds + 1, "finalists": [_race_record(entry, sweep) for entry in race]}
    return record


def _race_record(entry: dict[str, Any], sweep: SweepConfig) -> dict[str, Any]:
    searched = {name: plain_value(entry["recipe"][results_column(name)]) for name in sweep.searched_names}
    return {key: value for key, value in entry.items() if key != "recipe"} | {"searched": searched}


def _race_trials(racing_path: str, sweep: SweepConfig) -> Any:
    """The race's trials table, or None when no race was run or it stopped before Ray saved
    its first state (no racing trial had reported: the race is unfinished). Ray's saved state
    is what ``trials_table`` reads, and there is none without a race."""
    return trials_table(racing_path, sweep) if has_saved_state(racing_path) else None


def best_recipe(row: Any, sweep: SweepConfig) -> TrialConfig:
    """The sweep's recipe as written (relative paths travel) with the winner's searched values."""
    searched = {name: plain_value(row[name]) for name in sweep.searched_names}
    if "target_modules" in searched:
        searched["target_modules"] = list(searched["target_modules"])
    return TrialConfig.from_dict({**sweep.trial.to_dict(), **searched, "output_dir": f"outputs/{sweep.name}-best"})


def _trial_number(trial: Any) -> int:
    """1-based order in which the searcher proposed the trial: Tune's search generator
    starts each experiment tag with its counter ("1_learning_rate=...")."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return int(head) if head.isdigit() else 0


def _status(status: str, last: dict[str, Any]) -> str:
    if status == COMPLETED and not last.get(COMPLETED_KEY, False):
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
    metrics: dict[str, Any] = {name: metric_value(last.get(name)) for name in (PRIMARY_TUNED, PRIMARY_BASELINE)}
    for key, value in last.items():
        if parse_metric_name(key):
            metrics[key] = metric_value(value)
    for key in RUN_FIELDS:
        metrics[key] = metric_value(last.get(key))
    metrics["steps"] = metric_value(last.get("steps", last.get("step")))
    metrics[COMPLETED_KEY] = bool(last.get(COMPLETED_KEY, False))
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
    return {name: {key: metric_value(value) for key, value in scores.items()} for name, scores in scores_by_eval_set(row).items()}
