"""The search table: every recipe of a grid trained once per seed, read back for replays.

One row per trained (recipe, seed):

- ``recipe`` (str): the recipe's id, its searched values (``learning_rate=0.000949 lora_r=8 ...``)
- one column per searched field, named as in the sweep's ``search:`` block (``learning_rate``,
  ``lora_r``, ``lora_alpha``, ``target_modules`` as its set name, any other searched field)
- ``seed`` (int): the training seed (``trial.seed``)
- ``completed`` (bool): trained to the end and scored; False: the trial errored
- ``curve_steps`` (list of int) and ``dev_wer_curve`` (list of float): the step and the tuned dev
  WER of every eval report, in order; the last is the final score (a trial reports every
  ``eval_every`` steps and once at the end, so the demo's curve is steps 50, 100, 150, 200)
- ``dev_tuned_wer``, ``dev_baseline_wer``, ``canary_tuned_wer``, ``canary_baseline_wer`` (float)
- ``steps`` (int): steps trained; ``seconds`` (float): the trial's wall time
- ``sweep``, ``trial_id`` (str): the sweep and trial the row came from

"dev" is the eval set the sweep optimises and "canary" the one its budget guards; the
metadata names them. The metadata is JSON under the Parquet schema key ``search_table``;
``REQUIRED_META`` lists what the replay reads, the builder adds provenance (commit, library
versions, build time, grid).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.budget import over_budget
from sweeps.search.racing import plain_value
from trainable.files import atomic_output

META_KEY = b"search_table"
COLUMNS = (
    "recipe", "seed", "completed", "curve_steps", "dev_wer_curve", "dev_tuned_wer", "dev_baseline_wer",
    "canary_tuned_wer", "canary_baseline_wer", "steps", "seconds", "sweep", "trial_id",
)
REQUIRED_META = (
    "search",              # the sweep's search space: {field: {low, high, log[, kind]} or {choices}}
    "points_to_evaluate",  # the sweep's first recipes, every searched field given
    "num_samples",         # the sweep's trial budget
    "scheduler",           # {type: asha|none, grace_period, reduction_factor}, counted in reports
    "max_reports",         # eval reports of a full trial: ASHA's max_t
    "eval_every", "max_steps",
    "sweep_seed",          # the training seed every sweep trial uses (trial.seed)
    "canary_budget",       # most the canary's WER may rise over its baseline (0.02 = 2 points)
    "dev_eval_set", "canary_eval_set",
)


class TableError(ValueError):
    """The table cannot answer what the replay asks; the message says what is missing."""


@dataclass(frozen=True)
class Run:
    """One table row as a replay reads it: a recipe trained with one seed."""

    recipe: str
    seed: int
    completed: bool
    curve_steps: tuple[int, ...]
    dev_wer_curve: tuple[float, ...]
    dev_wer: float
    canary_rise: float
    steps: int


def recipe_id(params: dict[str, Any]) -> str:
    """A recipe's name from its searched values, in search-space order."""
    return " ".join(f"{name}={value:.6g}" if isinstance(value, float) else f"{name}={value}" for name, value in params.items())


class SearchTable:
    """The rows, the metadata, and the lookups a replay makes: a recipe's runs by seed, and
    the recipe a searcher's proposal lands on (ranges snapped to the table's grid)."""

    def __init__(self, rows: Any, meta: dict[str, Any]):
        missing = [c for c in COLUMNS if c not in rows.columns] + [k for k in REQUIRED_META if k not in meta]
        missing += [name for name in meta.get("search", {}) if name not in rows.columns]
        if missing:
            raise TableError(f"search table lacks {', '.join(missing)}")
        self.rows, self.meta = rows.reset_index(drop=True), meta
        self.recipes: list[str] = list(dict.fromkeys(self.rows["recipe"]))
        first = self.rows.drop_duplicates("recipe").set_index("recipe")
        self._params = {r: {name: plain_value(first.loc[r, name]) for name in meta["search"]} for r in self.recipes}
        self._by_values = {tuple(p.values()): r for r, p in self._params.items()}
        self._axes = {name: sorted({p[name] for p in self._params.values()}, key=_sort_key) for name in meta["search"]}
        # The space searchers are replayed over: the sweep's, as far as the table covers it. A
        # set's choices narrow to those the grid holds (a table built with --grid may leave
        # some out); a range stays a range, its draws snapped to the grid.
        self.search: dict[str, dict[str, Any]] = {name: _covered(spec, self._axes[name]) for name, spec in meta["search"].items()}
        self._runs: dict[str, dict[int, Run]] = {r: {} for r in self.recipes}
        for row in self.rows.itertuples(index=False):
            self._runs[row.recipe][int(row.seed)] = _run(row)

    @property
    def canary_budget(self) -> float:
        return float(self.meta["canary_budget"])

    @property
    def sweep_seed(self) -> int:
        return int(self.meta["sweep_seed"])

    def params(self, recipe: str) -> dict[str, Any]:
        return dict(self._params[recipe])

    def sweep_run(self, recipe: str) -> Run:
        """What a sweep trial of this recipe observes: its run with the sweep's training seed."""
        run = self._runs[recipe].get(self.sweep_seed)
        if run is None:
            raise TableError(f"{recipe} has no row with the sweep's seed {self.sweep_seed}")
        return run

    def other_runs(self, recipe: str) -> list[Run]:
        """Its completed runs with other seeds, by seed: what racing retrains it with."""
        return [run for seed, run in sorted(self._runs[recipe].items()) if seed != self.sweep_seed and run.completed]

    def recipe_for(self, params: dict[str, Any]) -> str:
        """The table's recipe for a proposal: a range value snaps to the nearest grid value
        (in log space for a log range), a choice must be in the table as it is."""
        values = tuple(self._snap(name, params[name]) for name in self.search)
        if values not in self._by_values:
            raise TableError(f"the table has no recipe {recipe_id(dict(zip(self.search, values)))}; the grid must hold every combination")
        return self._by_values[values]

    def _snap(self, name: str, value: Any) -> Any:
        axis, spec = self._axes[name], self.search[name]
        if "choices" in spec:
            if value not in axis:
                raise TableError(f"{name}={value!r} is not in the table (it has {axis})")
            return value
        if spec.get("log"):
            return min(axis, key=lambda grid_value: abs(math.log(grid_value) - math.log(value)))
        return min(axis, key=lambda grid_value: abs(grid_value - value))


@dataclass(frozen=True)
class GroundTruth:
    """Per recipe, the mean over its completed seeds of final dev WER and canary rise (a recipe
    with one seed has that seed as its mean); the target is the best recipe whose mean rise
    keeps the budget, and ``good`` holds every feasible recipe within ``within`` of it."""

    recipes: Any  # DataFrame indexed by recipe: dev_wer, canary_rise, seeds, feasible, held_out
    target: str
    within: float
    good: frozenset[str]

    @property
    def held_out(self) -> bool:
        """The means leave out the seeds a replay observes (``ground_truth`` with ``race_seeds``)."""
        return bool(self.recipes["held_out"].any())

    def dev_wer(self, recipe: str) -> float:
        return float(self.recipes.loc[recipe, "dev_wer"])

    def feasible(self, recipe: str) -> bool:
        return bool(self.recipes.loc[recipe, "feasible"])


def ground_truth(table: SearchTable, within: float = 0.01, race_seeds: int | None = None) -> GroundTruth:
    """The truth replays are scored against. With ``race_seeds``, it is held out from them: a
    recipe's means leave out the seeds a replay can observe (the sweep's seed, and the first
    ``race_seeds`` other seeds that racing retrains it with), so the seeds that chose a recipe
    do not also grade it; a recipe with no seed left keeps all it has (on the demo table,
    those are recipes far from the best, whose single seed ranked them outside the top)."""
    done, held_out = table.rows[table.rows["completed"].astype(bool)], set()
    if race_seeds is not None:
        done, held_out = _unobserved(table, done, race_seeds)
        if not held_out:
            raise TableError(f"no recipe has a seed besides the sweep's and the {race_seeds} that racing retrains it with, "
                             f"so there is nothing to hold out; build the table with --extra-seeds {race_seeds + 1} or more")
    done = done.assign(canary_rise=done["canary_tuned_wer"] - done["canary_baseline_wer"])
    means = done.groupby("recipe", sort=False).agg(
        dev_wer=("dev_tuned_wer", "mean"), canary_rise=("canary_rise", "mean"), seeds=("seed", "nunique")
    )
    means["feasible"] = [not over_budget(rise, table.canary_budget) for rise in means["canary_rise"]]
    means["held_out"] = means.index.isin(held_out)
    feasible = means[means["feasible"]]
    if not len(feasible):
        raise TableError(f"no recipe keeps the canary budget (+{table.canary_budget:g}) on average: there is no target")
    target = str(feasible["dev_wer"].idxmin())
    # Good: a dev WER at most ``within`` above the target's, with the sweep's budget slack
    # (over_budget); a NaN dev WER is not good.
    dev_wer = feasible["dev_wer"]
    good = feasible.index[dev_wer.notna() & ~over_budget(dev_wer, feasible.loc[target, "dev_wer"] + within)]
    return GroundTruth(recipes=means, target=target, within=within, good=frozenset(good))


def _unobserved(table: SearchTable, done: Any, race_seeds: int) -> tuple[Any, set[str]]:
    """The completed rows no replay observes (all of a recipe's rows when none is left), and
    the recipes whose truth is held out."""
    import pandas as pd

    observed = {recipe: {table.sweep_seed} | {run.seed for run in table.other_runs(recipe)[:race_seeds]} for recipe in table.recipes}
    unseen = pd.Series([seed not in observed[recipe] for recipe, seed in zip(done["recipe"], done["seed"])], index=done.index, dtype=bool)
    held_out = set(done.loc[unseen, "recipe"])
    return done[unseen | ~done["recipe"].isin(held_out)], held_out


def write_search_table(rows: Any, meta: dict[str, Any], path: str | Path) -> Path:
    """Parquet with the metadata in its schema, written then renamed (never half a table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    SearchTable(rows, meta)  # refuse to write what the replay could not read
    path = Path(path)
    table = pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(meta, default=plain_value).encode()})
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_search_table(path: str | Path) -> SearchTable:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise TableError(f"no search table at {path}; build one with: python -m benchmarks.search_table")
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise TableError(f"{path} has no '{META_KEY.decode()}' metadata; was it written by benchmarks.search_table?")
    return SearchTable(table.to_pandas(), json.loads(raw))


def _run(row: Any) -> Run:
    import pandas as pd

    completed = bool(row.completed)
    curve = tuple(float(w) for w in row.dev_wer_curve)
    # An errored trial may not know its steps: it ran at least to its last report.
    steps = row.steps if not pd.isna(row.steps) else (row.curve_steps[-1] if len(row.curve_steps) else 0)
    return Run(
        recipe=row.recipe, seed=int(row.seed), completed=completed,
        curve_steps=tuple(int(s) for s in row.curve_steps), dev_wer_curve=curve,
        dev_wer=float(row.dev_tuned_wer) if completed else math.nan,
        canary_rise=float(row.canary_tuned_wer - row.canary_baseline_wer) if completed else math.nan,
        steps=int(steps),
    )


def _covered(spec: dict[str, Any], axis: list[Any]) -> dict[str, Any]:
    if "choices" not in spec:
        return spec
    return {**spec, "choices": [choice for choice in spec["choices"] if choice in axis]}


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))
