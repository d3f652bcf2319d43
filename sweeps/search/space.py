"""The Optuna define-by-run search space of a sweep, built from its YAML ``search:`` block.

A class rather than a closure: ``OptunaSearch`` pickles its space with the searcher state, and
``Tuner.restore`` needs it back unchanged, so the space must be a plain picklable object.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.search.config import PER_TRIAL_FIELDS, SearchParam, SweepConfig

# Recipe fields that hold a path, so a searched choice may be a relative path.
PATH_FIELDS = ("model", "train_manifest")


@dataclass(frozen=True)
class SearchSpace:
    """Suggests the searched fields and returns the fixed rest of the recipe as constants.

    Tune merges the constants into each trial's config, so every trial's config (and its
    ``params.json``) is the whole recipe: a trial dir alone says what it ran.
    """

    params: tuple[SearchParam, ...]
    fixed: tuple[tuple[str, Any], ...]

    def __call__(self, trial: Any) -> dict[str, Any]:
        """The fixed fields, and each grid range's trained value in place of Optuna's sample
        (Ray's OptunaSearch lets what this returns override the suggested values)."""
        trained = {param.name: param.suggest(trial) for param in self.params}
        return {**dict(self.fixed), **{param.name: trained[param.name] for param in self.params if param.grid}}

    def recipe(self, params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        """The searched values a trial with Optuna's ``params`` trains: the key that tells two
        trials' recipes apart (the fixed fields are the same for every trial)."""
        return tuple((param.name, param.trained(params[param.name])) for param in self.params if param.name in params)


def build_search_space(sweep: SweepConfig, resolved_trial: Any | None = None) -> SearchSpace:
    """``resolved_trial``: the recipe with absolute paths (``TrialConfig.resolved()``), since
    Ray starts each trial in its own directory."""
    recipe = (resolved_trial or sweep.trial).to_dict()
    skip = set(sweep.searched_names) | set(PER_TRIAL_FIELDS)
    fixed = tuple((name, value) for name, value in recipe.items() if name not in skip)
    return SearchSpace(params=sweep.search, fixed=fixed)


def with_absolute_paths(sweep: SweepConfig) -> SweepConfig:
    """Relative paths among searched choices (and in the points), made absolute on the driver
    as ``TrialConfig.resolved()`` does for the fixed recipe: a trial runs in its own folder."""
    absolute: dict[str, dict[Any, Any]] = {}
    params = []
    for param in sweep.search:
        if param.name in PATH_FIELDS and param.kind == "choice":
            absolute[param.name] = {c: getattr(sweep.trial.replace(**{param.name: c}).resolved(), param.name) for c in param.choices}
            param = dataclasses.replace(param, choices=tuple(absolute[param.name][c] for c in param.choices))
        params.append(param)
    points = tuple({name: absolute.get(name, {}).get(value, value) for name, value in point.items()} for point in sweep.points_to_evaluate)
    return dataclasses.replace(sweep, search=tuple(params), points_to_evaluate=points)


def build_searcher(sweep: SweepConfig, space: SearchSpace, study_db: str | Path | None = None):
    """The sweep's searcher (``SweepSearch``): a seeded TPE sampler, the given points first,
    budgets as constraints, one study per sweep, stored in ``study_db`` (SQLite) when given."""
    import optuna

    from sweeps.search.searcher import SweepSearch, objective_metrics

    # TPE samples at random until n_startup_trials trials have finished, points_to_evaluate included.
    sampler = optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=startup_trials(sweep.num_samples, sweep.startup_trials))
    metric = objective_metrics(sweep.select_on, sweep.objectives) if sweep.objectives else sweep.metric
    return SweepSearch(
        space=space,
        metric=metric,
        mode=[sweep.mode] * len(metric) if sweep.objectives else sweep.mode,
        points_to_evaluate=[dict(point) for point in sweep.points_to_evaluate] or None,
        sampler=sampler,
        study_name=sweep.name,
        storage=study_storage(study_db) if study_db else None,
        budgets=sweep.max_wer_increase,
    )


def study_storage(path: str | Path):
    """Optuna's SQLite storage of a sweep's study, which optuna-dashboard reads too."""
    import optuna

    return optuna.storages.RDBStorage(f"sqlite:///{Path(path).absolute()}")


def startup_trials(num_samples: int, configured: int | None = None) -> int:
    """Random trials before TPE models the results: the sweep's ``startup_trials`` when it sets
    them (``configured``), else a third of the budget of ``num_samples`` trials, at least 2 and
    at most 10. The search benchmark's replays use it too."""
    return configured or max(2, min(10, num_samples // 3))
