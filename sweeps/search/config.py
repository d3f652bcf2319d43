"""What a sweep searches and how it runs: read from a YAML, then ``key=value`` overrides.

PyYAML and the standard library only, so ``--help`` and a mistyped key fail in a second,
before torch or Ray load. Every error names the key that is wrong.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from sweeps.budget import budget_limit
from sweeps.confirm import confirm_pairs
from trainable.config import TrialConfig, target_module_set_name
from trainable.config_io import (
    ConfigError, apply_override, coerce_bool, coerce_number, did_you_mean, parse_override, read_yaml, reject_unknown,
)

# Fields the trainable sets for each trial itself, so a sweep may neither fix nor search them.
PER_TRIAL_FIELDS = ("output_dir", "num_threads")
# The only metric every report carries (intermediate and final), so the searcher and ASHA
# see it on every result: the tuned corpus WER on the first eval set.
REPORTED_METRICS = ("eval_wer",)
CHOICE_TYPES = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class SearchParam:
    """One searched TrialConfig field: a float/int range (optionally log) or a list of choices.

    ``grid``: a float range whose trials train one of ``grid`` values spread evenly from low to
    high (evenly in log space for a log range): Optuna samples and models the range, and the
    trial trains the grid value nearest the sample (``trained``). Recipes then repeat, and the
    sweep trains each only once (``sweeps.search.searcher``)."""

    name: str
    kind: Literal["float", "int", "choice"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    grid: int | None = None

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial (define-by-run) for this parameter's value; the value trained."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return self.trained(trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log))

    def grid_values(self) -> tuple[float, ...]:
        """The values a grid range trains, low first; 6 significant digits (1e-3, not 0.0010000000000000002)."""
        if not self.grid:
            return ()
        if self.log:
            ratio = math.log(self.high / self.low)
            return tuple(float(f"{self.low * math.exp(ratio * i / (self.grid - 1)):.6g}") for i in range(self.grid))
        return tuple(float(f"{self.low + (self.high - self.low) * i / (self.grid - 1):.6g}") for i in range(self.grid))

    def trained(self, value: Any) -> Any:
        """The value a trial trains for a sampled ``value``: the nearest grid value (in log
        space for a log range), or ``value`` itself without a grid."""
        if not self.grid:
            return value
        distance = (lambda v: abs(math.log(v / value))) if self.log else (lambda v: abs(v - value))
        return min(self.grid_values(), key=distance)

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if self.grid:
            return any(math.isclose(value, v, rel_tol=1e-6) for v in self.grid_values())
        return self.low <= value <= self.high

    def domain(self) -> str:
        """Where a value ``contains`` refuses is not, as an error says it."""
        if self.kind == "choice":
            return f"outside the searched {list(self.choices)}"
        if self.grid:
            return f"not one of the {self.grid} values search.{self.name}.grid trains: {list(self.grid_values())}"
        return f"outside the searched [{self.low}, {self.high}]"

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        data: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            data["step"] = self.step
        if self.grid is not None:
            data["grid"] = self.grid
        return data


@dataclass(frozen=True)
class SchedulerConfig:
    """ASHA early stopping, counted in eval reports (one every ``trial.eval_every`` steps)."""

    kind: Literal["asha", "none"] = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "none":
            return {"type": "none"}
        return {"type": self.kind, "grace_period": self.grace_period, "reduction_factor": self.reduction_factor}


@dataclass(frozen=True)
class Resources:
    """What one trial holds: CPUs (torch threads follow) and a GPU share (0.25 = four per GPU)."""

    cpu: float = 1.0
    gpu: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


@dataclass(frozen=True)
class RacingConfig:
    """After the search, the best ``finalists`` feasible recipes are retrained with ``seeds``
    new seeds each, and the winner is the finalist with the best mean over all its seeds:
    one seed per trial makes the search's winner partly the luckiest seed."""

    finalists: int = 3
    seeds: int = 2

    @property
    def enabled(self) -> bool:
        return self.finalists > 0 and self.seeds > 0

    def to_dict(self) -> dict[str, int]:
        return {"finalists": self.finalists, "seeds": self.seeds}


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep: the fixed part of the recipe, the searched part, and how to run trials."""

    name: str
    trial: TrialConfig = field(default_factory=TrialConfig)
    search: tuple[SearchParam, ...] = ()
    points_to_evaluate: tuple[dict[str, Any], ...] = ()
    num_samples: int = 8
    max_concurrent_trials: int = 2
    resources_per_trial: Resources = field(default_factory=Resources)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    max_failures: int = 0
    seed: int = 0
    # TPE's random trials before it models the results (points_to_evaluate count among them);
    # None: a third of num_samples, 2-10 (sweeps.search.space.startup_trials).
    startup_trials: int | None = None
    metric: str = "eval_wer"
    mode: Literal["min", "max"] = "min"
    checkpoints_to_keep: int = 2
    # (eval set, most its tuned WER may exceed its baseline WER) pairs: a trial over any of
    # them is infeasible to the sampler (an Optuna constraint) and cannot win.
    max_wer_increase: tuple[tuple[str, float], ...] = ()
    # The untouched (name, path) set repro confirms the winner on, which no trial scores.
    confirm_on: tuple[tuple[str, str], ...] = ()
    # Eval sets whose objectives a multi-objective study minimises: the select set's WER,
    # then each other set's WER increase. Empty: one objective, the select set's WER.
    objectives: tuple[str, ...] = ()
    racing: RacingConfig = field(default_factory=RacingConfig)

    @property
    def select_on(self) -> str:
        """The eval set trials are scored and chosen on (dev): the first of trial.eval_manifests,
        where ``select_on:`` in the YAML puts it."""
        return self.trial.primary_eval

    @property
    def searched_names(self) -> tuple[str, ...]:
        return tuple(param.name for param in self.search)

    @property
    def max_reports(self) -> int:
        """Eval reports the longest trial makes: ASHA's ``max_t``."""
        max_steps = self.trial.max_steps
        for param in self.search:
            if param.name == "max_steps":
                max_steps = max(param.choices) if param.kind == "choice" else param.high
        # The core reports at each multiple of eval_every below max_steps, then once at the end.
        return (max_steps - 1) // self.trial.eval_every + 1 if self.trial.eval_every else 1

    def to_dict(self) -> dict[str, Any]:
        """The YAML shape again (as saved beside the results), so a sweep can be re-read."""
        return {
            "name": self.name,
            "trial": {key: value for key, value in self.trial.to_dict().items() if key not in PER_TRIAL_FIELDS},
            "search": {param.name: param.to_dict() for param in self.search},
            "points_to_evaluate": [dict(point) for point in self.points_to_evaluate],
            "num_samples": self.num_samples,
            "max_concurrent_trials": self.max_concurrent_trials,
            "resources_per_trial": self.resources_per_trial.to_dict(),
            "scheduler": self.scheduler.to_dict(),
            "max_failures": self.max_failures,
            "seed": self.seed,
            "startup_trials": self.startup_trials,
            "metric": self.metric,
            "mode": self.mode,
            "checkpoints_to_keep": self.checkpoints_to_keep,
            "max_wer_increase": dict(self.max_wer_increase),
            "select_on": self.select_on,
            "confirm_on": dict(self.confirm_on),
            "objectives": list(self.objectives),
            "racing": self.racing.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "SweepConfig":
        """Validate a YAML-shaped dict; every error names the key."""
        if not isinstance(raw, dict):
            raise ConfigError(f"a sweep config is a mapping of keys, got {type(raw).__name__}")
        reject_unknown(raw, (*(f.name for f in fields(cls)), "select_on"))
        select_on = str(raw.get("select_on") or "")
        trial = _selecting_on(_trial_config(raw.get("trial") or {}), select_on)
        search = _search_params(raw.get("search") or {}, trial)
        config = cls(
            name=_name(raw.get("name")),
            trial=trial,
            search=search,
            points_to_evaluate=_points(raw.get("points_to_evaluate") or [], search, trial),
            num_samples=_integer(raw, "num_samples", 8, minimum=1),
            max_concurrent_trials=_integer(raw, "max_concurrent_trials", 2, minimum=1),
            resources_per_trial=_resources(raw.get("resources_per_trial") or {}),
            scheduler=_scheduler(raw.get("scheduler", "asha")),
            max_failures=_integer(raw, "max_failures", 0, minimum=-1),
            seed=_integer(raw, "seed", 0, minimum=0),
            startup_trials=None if raw.get("startup_trials") is None else _integer(raw, "startup_trials", 0, minimum=1),
            metric=_choice(raw, "metric", "eval_wer", REPORTED_METRICS),
            mode=_choice(raw, "mode", "min", ("min", "max")),
            checkpoints_to_keep=_integer(raw, "checkpoints_to_keep", 2, minimum=1),
            max_wer_increase=_wer_budgets(raw.get("max_wer_increase") or {}, trial),
            confirm_on=_confirm_on(raw.get("confirm_on") or {}, trial),
            objectives=_objectives(raw.get("objectives") or [], trial),
            racing=_racing(raw.get("racing", {})),
        )
        _check_consistent(config)
        return config


def results_column(name: str) -> str:
    """The results-table column that shows a searched field: target modules by their set
    name (``qkvo+fc``), every other field under its own name."""
    return "target_module_set" if name == "target_modules" else name


def load_sweep_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    """Read a sweep YAML, apply ``dotted.key=value`` overrides on top, validate. An error the
    YAML alone does not have is blamed on the overrides, so nobody searches the file for it."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a sweep config is a mapping of keys (name, trial, search, ...)")
    merged = copy.deepcopy(raw)
    for override in overrides:
        keys, value = parse_override(override)
        apply_override(merged, keys, value)
    try:
        return SweepConfig.from_dict(merged)
    except ConfigError as error:
        blame = path if not overrides or _fails(raw) else f"override{'s' if len(overrides) > 1 else ''} {' '.join(overrides)}"
        raise ConfigError(f"{blame}: {error}") from None


def _fails(raw: dict[str, Any]) -> bool:
    try:
        SweepConfig.from_dict(raw)
    except ConfigError:
        return True
    return False


def _trial_config(raw: Any) -> TrialConfig:
    if not isinstance(raw, dict):
        raise ConfigError("trial: must be a mapping of TrialConfig fields")
    fixed_per_trial = sorted(set(raw) & set(PER_TRIAL_FIELDS))
    if fixed_per_trial:
        raise ConfigError(f"trial.{fixed_per_trial[0]}: set per trial by the sweep (trial dir, trial CPUs); remove it")
    try:
        return TrialConfig.from_dict(raw)
    except ConfigError as error:
        raise ConfigError(f"trial: {error}") from None


def _search_params(raw: Any, trial: TrialConfig) -> tuple[SearchParam, ...]:
    if not isinstance(raw, dict):
        raise ConfigError("search: must map TrialConfig field names to {low, high, log} or {choices}")
    return tuple(_search_param(str(name), spec, trial) for name, spec in raw.items())


def _search_param(name: str, spec: Any, trial: TrialConfig) -> SearchParam:
    where = f"search.{name}"
    known_fields = {f.name: f for f in fields(TrialConfig)}
    if name not in known_fields:
        raise ConfigError(f"{where}: not a TrialConfig field{did_you_mean(name, known_fields)}; known: {', '.join(sorted(known_fields))}")
    if name in PER_TRIAL_FIELDS:
        raise ConfigError(f"{where}: set per trial by the sweep, cannot be searched")
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: give {{low: .., high: .., log: true}} or {{choices: [..]}}, got {spec!r}")
    reject_unknown(spec, ("low", "high", "log", "step", "grid", "choices"), where)
    param = _choices_param(name, spec, where) if "choices" in spec else _range_param(name, spec, where, trial)
    for value in (param.choices if param.kind == "choice" else (param.low, param.high)):
        _check_value_in_recipe(trial, name, value, where)
    return param


def _choices_param(name: str, spec: dict[str, Any], where: str) -> SearchParam:
    if set(spec) != {"choices"}:
        raise ConfigError(f"{where}: choices cannot be combined with low/high/log/step/grid")
    choices = spec["choices"]
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{where}.choices: must be a non-empty list")
    for value in choices:
        if not isinstance(value, CHOICE_TYPES):
            raise ConfigError(
                f"{where}.choices: {value!r} is a {type(value).__name__}; Optuna takes str/int/float/bool/null "
                "(name target-module sets as strings: qv, qkvo, qkvo+fc)"
            )
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"{where}.choices: duplicates in {choices}")
    return SearchParam(name=name, kind="choice", choices=tuple(choices))


def _range_param(name: str, spec: dict[str, Any], where: str, trial: TrialConfig) -> SearchParam:
    missing = [key for key in ("low", "high") if key not in spec]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}: a range needs low and high (or give choices)")
    current = getattr(trial, name)
    if isinstance(current, bool) or not isinstance(current, (int, float)) and current is not None:
        raise ConfigError(f"{where}: {name} is not numeric; give choices instead of a range")
    kind = "int" if isinstance(current, int) or name in _INT_FIELDS else "float"
    number = int if kind == "int" else float
    low, high = (coerce_number(spec[key], number, f"{where}.{key}") for key in ("low", "high"))
    step = coerce_number(spec["step"], number, f"{where}.step") if spec.get("step") is not None else None
    log = coerce_bool(spec.get("log", False), f"{where}.log")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}.low: a log range needs low > 0, got {low}")
    if log and step is not None and kind == "float":
        raise ConfigError(f"{where}: Optuna cannot combine log with step for floats")
    return SearchParam(name=name, kind=kind, low=low, high=high, log=log, step=step, grid=_grid(spec, kind, step, where))


def _grid(spec: dict[str, Any], kind: str, step: Any, where: str) -> int | None:
    """``grid: N``: a float range whose trials train N values from low to high."""
    if spec.get("grid") is None:
        return None
    if kind != "float":
        raise ConfigError(f"{where}.grid: only a float range takes a grid (an int range has step)")
    if step is not None:
        raise ConfigError(f"{where}: give step or grid, not both")
    grid = coerce_number(spec["grid"], int, f"{where}.grid")
    if grid < 2:
        raise ConfigError(f"{where}.grid: at least 2 values (low and high), got {grid}")
    return grid


_INT_FIELDS = {f.name for f in fields(TrialConfig) if "int" in str(f.type) and "float" not in str(f.type)}


def _check_value_in_recipe(trial: TrialConfig, name: str, value: Any, where: str) -> None:
    """A searched value must make a valid recipe, so no trial fails on a value the YAML allowed."""
    try:
        TrialConfig.from_dict({**trial.to_dict(), name: value})
    except ConfigError as error:
        raise ConfigError(f"{where}: {value!r} gives an invalid trial: {error}") from None


def _points(raw: Any, search: tuple[SearchParam, ...], trial: TrialConfig) -> tuple[dict[str, Any], ...]:
    """Complete each point from the trial recipe, so ``{}`` means the hand-run config itself."""
    if not isinstance(raw, list):
        raise ConfigError("points_to_evaluate: must be a list of {searched field: value}")
    by_name = {param.name: param for param in search}
    points = []
    for index, point in enumerate(raw):
        where = f"points_to_evaluate[{index}]"
        if point in ("trial", None):
            point = {}
        if not isinstance(point, dict):
            raise ConfigError(f"{where}: must be a mapping of searched fields, got {point!r}")
        reject_unknown(point, by_name, where, noun="searched field")
        points.append({name: _point_value(param, point, trial, f"{where}.{name}") for name, param in by_name.items()})
    return tuple(points)


def _point_value(param: SearchParam, point: dict[str, Any], trial: TrialConfig, where: str) -> Any:
    if param.name in point:
        value = point[param.name]
    elif param.name == "target_modules":
        value = target_module_set_name(trial.target_modules)
    else:
        value = getattr(trial, param.name)
    if param.kind != "choice":
        value = coerce_number(value, int if param.kind == "int" else float, where)
    if not param.contains(value):
        raise ConfigError(f"{where}: {value!r} is {param.domain()}")
    return value


def _scheduler(raw: Any) -> SchedulerConfig:
    if raw is None or raw in ("none", False):
        return SchedulerConfig(kind="none")
    if raw == "asha":
        return SchedulerConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"scheduler: 'asha', 'none' or {{type: asha, grace_period, reduction_factor}}, got {raw!r}")
    reject_unknown(raw, ("type", "grace_period", "reduction_factor"), "scheduler")
    kind = _choice(raw, "type", "asha", ("asha", "none"), where="scheduler.type")
    if kind == "none":
        return SchedulerConfig(kind="none")
    reduction = coerce_number(raw.get("reduction_factor", 2.0), float, "scheduler.reduction_factor")
    if reduction <= 1:
        raise ConfigError(f"scheduler.reduction_factor: must be > 1, got {reduction}")
    return SchedulerConfig(
        kind="asha",
        grace_period=_integer(raw, "grace_period", 1, minimum=1, where="scheduler.grace_period"),
        reduction_factor=reduction,
    )


def _resources(raw: Any) -> Resources:
    if not isinstance(raw, dict):
        raise ConfigError(f"resources_per_trial: must be {{cpu: N, gpu: fraction}}, got {raw!r}")
    reject_unknown(raw, ("cpu", "gpu"), "resources_per_trial")
    cpu = coerce_number(raw.get("cpu", 1), float, "resources_per_trial.cpu")
    gpu = coerce_number(raw.get("gpu", 0), float, "resources_per_trial.gpu")
    if cpu <= 0:
        raise ConfigError(f"resources_per_trial.cpu: must be > 0, got {cpu}")
    if gpu < 0 or (gpu > 1 and not gpu.is_integer()):
        raise ConfigError(f"resources_per_trial.gpu: a fraction in [0, 1] or a whole number, got {gpu}")
    return Resources(cpu=cpu, gpu=gpu)


def _selecting_on(trial: TrialConfig, select_on: str) -> TrialConfig:
    """The trial recipe with the select set first: the first eval set is the one each trial
    reports as ``eval_wer``, which the searcher and ASHA read."""
    if not select_on:
        return trial
    names = [name for name, _ in trial.eval_manifests]
    if select_on not in names:
        raise ConfigError(f"select_on: {select_on!r} is not an eval set of trial.eval_manifests ({', '.join(names)})")
    chosen = [pair for pair in trial.eval_manifests if pair[0] == select_on]
    return trial.replace(eval_manifests=tuple(chosen + [pair for pair in trial.eval_manifests if pair[0] != select_on]))


def _confirm_on(raw: Any, trial: TrialConfig) -> tuple[tuple[str, str], ...]:
    """``{test: path}``: one set, untouched by the sweep (no trial scores it), for repro."""
    pairs = confirm_pairs(raw)
    for name, path in pairs:
        for other, other_path in trial.eval_manifests:
            if name == other or Path(path).absolute() == Path(other_path).absolute():
                raise ConfigError(f"confirm_on.{name}: the sweep scores {other} ({other_path}) itself; "
                                  "the confirm set must be one no trial scores")
    return pairs


def _objectives(raw: Any, trial: TrialConfig) -> tuple[str, ...]:
    """``[dev, canary]``: minimise dev's WER and canary's WER increase together."""
    if not isinstance(raw, list):
        raise ConfigError(f"objectives: a list of eval sets, the select set first (e.g. [dev, canary]), got {raw!r}")
    names = [name for name, _ in trial.eval_manifests]
    for index, name in enumerate(raw):
        if name not in names:
            raise ConfigError(f"objectives[{index}]: {name!r} is not an eval set of trial.eval_manifests ({', '.join(names)})")
    if raw and raw[0] != trial.primary_eval:
        raise ConfigError(f"objectives[0]: must be the select set {trial.primary_eval!r}, whose WER is minimised")
    if len(raw) == 1 or len(set(raw)) != len(raw):
        raise ConfigError(f"objectives: the select set and at least one other, each once, got {raw}")
    return tuple(str(name) for name in raw)


def _racing(raw: Any) -> RacingConfig:
    if raw in ("none", None, False):
        return RacingConfig(finalists=0)
    if not isinstance(raw, dict):
        raise ConfigError(f"racing: {{finalists: K, seeds: N}} or none, got {raw!r}")
    reject_unknown(raw, ("finalists", "seeds"), "racing")
    return RacingConfig(
        finalists=_integer(raw, "finalists", 3, minimum=0, where="racing.finalists"),
        seeds=_integer(raw, "seeds", 2, minimum=0, where="racing.seeds"),
    )


def _wer_budgets(raw: Any, trial: TrialConfig) -> tuple[tuple[str, float], ...]:
    """``{canary: 0.02}``: each key an eval set of the trial other than the optimised one."""
    if not isinstance(raw, dict):
        raise ConfigError("max_wer_increase: must map eval set names to a WER increase (0.02 = 2 points)")
    others = [name for name, _ in trial.eval_manifests if name != trial.primary_eval]
    budgets = []
    for name, value in raw.items():
        where = f"max_wer_increase.{name}"
        if name == trial.primary_eval:
            raise ConfigError(f"{where}: {name} is the eval set the sweep optimises; budget the others ({', '.join(others) or 'none given'})")
        if name not in others:
            raise ConfigError(f"{where}: no such eval set in trial.eval_manifests; known: {', '.join(others) or 'none besides ' + trial.primary_eval}")
        budgets.append((str(name), budget_limit(value, where)))
    return tuple(budgets)


def _check_consistent(config: SweepConfig) -> None:
    if config.scheduler.kind == "asha" and config.trial.eval_every == 0:
        raise ConfigError(
            "scheduler: ASHA needs intermediate WER; set trial.eval_every > 0 or scheduler=none"
        )
    if config.scheduler.kind == "asha" and config.scheduler.grace_period > config.max_reports:
        reports = config.max_reports
        raise ConfigError(
            f"scheduler.grace_period: {config.scheduler.grace_period} reports, but the longest trial makes {reports} "
            f"(one per trial.eval_every = {config.trial.eval_every} steps, and one at the end); lower the grace period, "
            "score more often, train longer, or set scheduler=none"
        )
    if len(config.points_to_evaluate) > config.num_samples:
        raise ConfigError(
            f"num_samples: {config.num_samples} is fewer than the {len(config.points_to_evaluate)} points_to_evaluate"
        )


def _name(value: Any) -> str:
    name = str(value or "").strip()
    if not name or any(ch in name for ch in "/\\ ") or name.startswith("."):
        raise ConfigError(f"name: needs a plain folder name (no spaces or slashes), got {value!r}")
    return name


def _integer(raw: dict[str, Any], key: str, default: int, minimum: int, where: str | None = None) -> int:
    value = coerce_number(raw.get(key, default), int, where or key)
    if value < minimum:
        raise ConfigError(f"{where or key}: must be >= {minimum}, got {value}")
    return value


def _choice(raw: dict[str, Any], key: str, default: str, allowed: tuple[str, ...], where: str | None = None) -> Any:
    value = raw.get(key, default)
    if value not in allowed:
        raise ConfigError(f"{where or key}: {value!r} is not one of {', '.join(allowed)}")
    return value
