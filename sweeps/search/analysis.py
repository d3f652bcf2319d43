"""What a sweep learnt beyond its winner, for summary.md.

- The trade-off between the select set's WER and the budgeted sets' WER increases: every
  fully trained trial as a point, its Pareto front (no other trial is better on all of
  them), a plot, and the budget lines.
- When no trial keeps the budgets: the least-violating trials, and which searched
  parameter most decides the violation (Optuna's PED-ANOVA importance evaluator on the
  stored study, with the violation as its target) and which way to move it.
- Which searched parameters matter for a low select-set WER (the same evaluator). PED-ANOVA
  asks which parameter values the best trials share, which is the question here, and needs
  no scikit-learn (fANOVA does).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from sweeps.budget import over_budget, within_budget
from sweeps.search.config import SweepConfig, results_column
from trainable.metrics import metric_name

TRADEOFF_PLOT = "tradeoff.png"
# An importance from fewer trials says little; below this the summary says so instead.
MIN_TRIALS_FOR_IMPORTANCE = 4


def tradeoff_sets(sweep: SweepConfig) -> list[str]:
    """The eval sets whose WER increase is traded against the select set's WER: the
    budgeted ones, or else the other objectives."""
    names = [name for name, _ in sweep.max_wer_increase]
    names += [name for name in sweep.objectives[1:] if name not in names]
    return names


def tradeoff_points(trials: Any, sweep: SweepConfig, completed: str) -> Any:
    """One row per fully trained trial: id, searched values, select-set WER, each trade-off
    set's WER increase, the total budget violation (0 = keeps every budget), whether it keeps
    every budget (``feasible``, by the budget module's rule), and whether the trial is on the
    Pareto front."""
    import pandas as pd

    done = trials[(trials["status"] == completed) & trials[sweep.metric].notna()] if len(trials) else trials
    if not len(done):  # no fully trained trial; when none reported, the per-set WER columns are absent too
        return pd.DataFrame()
    points = pd.DataFrame({"trial_id": done["trial_id"], sweep.metric: done[sweep.metric]})
    for name in sweep.searched_names:
        points[name] = done[results_column(name)]
    limits = dict(sweep.max_wer_increase)
    points["violation"] = 0.0
    for name in tradeoff_sets(sweep):
        increase = done.get(metric_name(name, "tuned")) - done.get(metric_name(name, "baseline"))
        points[f"{name}_increase"] = increase
        if name in limits:  # by the budget's own rule: an increase at the limit violates nothing
            over = over_budget(increase, limits[name]) | increase.isna()
            points["violation"] += (increase - limits[name]).where(over, 0.0)
    points["feasible"] = within_budget(done, sweep.max_wer_increase)
    columns = [sweep.metric, *(f"{name}_increase" for name in tradeoff_sets(sweep))]
    points["pareto"] = pareto_front(points[columns].to_numpy(dtype=float), minimise=sweep.mode == "min")
    return points.reset_index(drop=True)


def pareto_front(values: Any, minimise: bool = True) -> list[bool]:
    """Per row: no other row is at least as good in every column and better in one. The
    first column follows ``minimise``; the others (WER increases) are always minimised."""
    import numpy as np

    values = np.asarray(values, dtype=float).copy()
    if not minimise and values.size:
        values[:, 0] = -values[:, 0]
    front = []
    for row in values:
        dominated = np.any(np.all(values <= row, axis=1) & np.any(values < row, axis=1))
        front.append(bool(np.all(np.isfinite(row)) and not dominated))
    return front


def plot_tradeoff(points: Any, sweep: SweepConfig, path: Path, winner_id: str | None) -> bool:
    """Select-set WER against the first trade-off set's WER increase, front and budget marked.
    Returns whether a plot was written (it needs a trade-off set and a trial)."""
    sets = tradeoff_sets(sweep)
    if not sets or not len(points):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainable.files import atomic_output

    name = sets[0]
    x, y = 100 * points[f"{name}_increase"], 100 * points[sweep.metric]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.scatter(x, y, color="tab:gray", label="trials")
    front = points["pareto"]
    axis.scatter(x[front], y[front], color="tab:blue", label="Pareto front")
    limit = dict(sweep.max_wer_increase).get(name)
    if limit is not None:
        axis.axvline(100 * limit, color="tab:red", linestyle="--", linewidth=1, label=f"{name} budget")
    if winner_id is not None and (points["trial_id"] == winner_id).any():
        chosen = points["trial_id"] == winner_id
        axis.scatter(x[chosen], y[chosen], marker="*", s=200, color="tab:orange", label="chosen")
    axis.set_xlabel(f"{name} WER increase (points)")
    axis.set_ylabel(f"{sweep.select_on} WER (%)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(figure)
    return True


def load_study(study_db: Path, sweep: SweepConfig) -> Any:
    """The sweep's stored Optuna study, or None when the file or the study in it is missing."""
    import optuna

    from sweeps.search.space import study_storage

    if not Path(study_db).is_file():
        return None
    try:
        return optuna.load_study(study_name=sweep.name, storage=study_storage(study_db))
    except KeyError:  # no study of that name in the file
        return None


def parameter_importances(study: Any, sweep: SweepConfig, target: str = "wer") -> dict[str, float]:
    """Optuna's importance of each searched parameter on the stored study (``load_study``):
    for the select set's WER (``target="wer"``, fully trained trials), or for the budget
    violation (``target="violation"``, every trial whose constraints are known). Empty when
    the study is missing (None) or has too few trials to say anything."""
    import optuna

    if study is None:
        return {}
    study = _without_repeats(study)  # each recipe counted once, however often Optuna proposed it
    states = (optuna.trial.TrialState.COMPLETE,) if target == "wer" else (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    usable = [t for t in study.get_trials(deepcopy=False, states=states) if target == "wer" or t.constraints]
    if len(usable) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    if target == "wer":
        measure = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    else:
        measure = _violation
    try:
        with warnings.catch_warnings():  # PED-ANOVA warns that it ranks for low targets: ours are WER and violation
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), params=list(sweep.searched_names),
                target=measure, normalize=True,
            )
    except (RuntimeError, ValueError):  # e.g. a parameter that took one value only
        return {}


def _without_repeats(study: Any) -> Any:
    """An in-memory copy of the study's finished trials less the told repeats (``repeat_of``,
    ``sweeps.search.repeats``)."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line in the sweep's output
    try:
        view = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    view.add_trials([t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and "repeat_of" not in t.user_attrs])
    return view


def move_hint(points: Any, parameter: str) -> str:
    """Which way ``parameter`` lowers the violation across the trials: a direction for a
    number, the best choice for a category."""
    values, violation = points[parameter], points["violation"]
    if values.dtype.kind in "if":
        correlation = values.rank().corr(violation.rank())
        if not math.isfinite(correlation) or correlation == 0:
            return f"no clear direction in {parameter}"
        return f"{'lower' if correlation > 0 else 'higher'} {parameter} (rank correlation with the violation {correlation:+.2f})"
    means = violation.groupby(values.astype(str)).mean().sort_values()
    return f"{parameter} = {means.index[0]} (mean violation {100 * means.iloc[0]:.2f} points, against {100 * means.iloc[-1]:.2f} for {means.index[-1]})"


def _violation(trial: Any) -> float:
    return sum(value for value in trial.constraints.values() if value > 0)
