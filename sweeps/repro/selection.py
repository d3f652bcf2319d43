"""How a sweep chose its recipe, and what repro confirms it on.

A sweep's winner is the best of many noisy scores on its select set (``select_on``), so its
gain there is biased upward (winner's curse). Repro retrains it on other seeds and scores an
eval set the selection never saw (``confirm_on``, or ``--confirm-on``) in place of the select
set; where no such set is named it tests the select set itself and says so. Seeds the sweep
selected with (``selection_seeds``: its own seed and its racing seeds) are avoided, and the
sweep's WER budgets (``max_wer_increase``) travel with the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sweeps.budget import budget_limit
from sweeps.confirm import confirm_pairs
from sweeps.repro import ReproError
from trainable.config import TrialConfig, parse_eval_manifest
from trainable.config_io import ConfigError, as_mapping, coerce_number, read_config_file

# Keys only a sweep's best.json holds; a recipe file with any of them is a sweep's choice.
SWEEP_KEYS = ("sweep", "select_on", "confirm_on", "selection_seeds", "max_wer_increase")


@dataclass(frozen=True)
class EvalSet:
    """An eval set by name and manifest path (absolute once resolved; None where unknown)."""

    name: str
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path}


@dataclass(frozen=True)
class SweepChoice:
    """What a recipe file says about how the recipe was chosen. ``selected_on`` is None when no
    sweep chose it (a plain recipe, or a sweep YAML's ``trial:``)."""

    selected_on: EvalSet | None = None
    confirm_on: EvalSet | None = None
    budgets: dict[str, float] = field(default_factory=dict)
    selection_seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class RecipeFile:
    """A recipe file (a sweep's best.json, a recipe, a sweep YAML) as read once. Whether its
    sweep finished, the recipe and the sweep's choice all come from this one reading, so a
    best.json rewritten meanwhile (a sweep still finishing its race) cannot give repro a
    recipe of one version and a choice of another."""

    path: Path
    data: Any  # the file's content as parsed, which need not be a mapping


def read_recipe_file(path: Path) -> RecipeFile:
    try:
        return RecipeFile(path, read_config_file(path))
    except ConfigError as error:
        raise ReproError(str(error)) from None


def check_sweep_finished(source: RecipeFile) -> None:
    """Refuse a best.json that says its sweep is unfinished (``"complete": false``: search
    trials or race runs not finished): it holds the best so far, or no recipe at all while
    the race is unfinished, not the sweep's winner, and the finished sweep may choose another."""
    path, data = source.path, source.data
    if path.suffix != ".json":
        return
    if not isinstance(data, dict) or data.get("complete") is not False:
        return
    name = data.get("sweep") or path.parent.name
    unfinished = data.get("unfinished")
    count = f" ({unfinished} search trial(s) or race run(s) not finished)" if isinstance(unfinished, int) else ""
    holds = "its best recipe so far, not its winner" if isinstance(data.get("config"), dict) else "no winner yet"
    resume = data.get("resume") or f"python -m sweeps.run --resume --name {name}"
    raise ReproError(f"{path}: sweep {name!r} is unfinished{count}, so best.json holds {holds}. "
                     f"Finish it with: {resume}, then run repro again")


def read_sweep_choice(source: RecipeFile, config: TrialConfig) -> SweepChoice:
    """The sweep's keys of a best.json (older ones lack select_on, confirm_on and
    selection_seeds: their select set is the recipe's first eval set); a sweep YAML's
    confirm_on and max_wer_increase (its ``trial:`` recipe was chosen by no sweep); a plain
    recipe file gives an empty choice."""
    path, data = source.path, source.data
    if path.suffix.lower() in (".yaml", ".yml"):
        return _sweep_yaml_choice(source)
    if path.suffix != ".json":
        return SweepChoice()
    if not isinstance(data, dict) or not any(key in data for key in SWEEP_KEYS):
        return SweepChoice()
    paths = dict(config.resolved().eval_manifests)  # absolute, as the seed runs will read them
    select_name = data.get("select_on") or config.primary_eval
    if not isinstance(select_name, str) or select_name not in paths:
        raise ReproError(f"{path}: select_on: {select_name!r} is not one of the recipe's eval sets ({', '.join(paths)})")
    return SweepChoice(
        selected_on=EvalSet(select_name, paths[select_name]),
        confirm_on=_confirm_set(data.get("confirm_on"), path),
        budgets=parse_budgets(data.get("max_wer_increase") or {}, f"{path}: max_wer_increase"),
        selection_seeds=_seeds(data.get("selection_seeds") or [], path),
    )


def _sweep_yaml_choice(source: RecipeFile) -> SweepChoice:
    path = source.path
    try:
        data = as_mapping(source.data, path)
        if not isinstance(data.get("trial"), dict):
            return SweepChoice()  # a plain recipe written as YAML
        pairs = confirm_pairs(data.get("confirm_on") or {})
    except ConfigError as error:
        raise ReproError(str(error) if str(error).startswith(str(path)) else f"{path}: {error}") from None
    return SweepChoice(
        confirm_on=EvalSet(*pairs[0]) if pairs else None,
        budgets=parse_budgets(data.get("max_wer_increase") or {}, f"{path}: max_wer_increase"),
    )


def _confirm_set(value: Any, path: Path) -> EvalSet | None:
    if value is None:
        return None
    if not (isinstance(value, dict) and isinstance(value.get("name"), str) and isinstance(value.get("path"), str)):
        raise ReproError(f"{path}: confirm_on: expected {{\"name\": NAME, \"path\": PATH}} or null, got {value!r}")
    return EvalSet(value["name"], value["path"])


def _seeds(value: Any, path: Path) -> tuple[int, ...]:
    try:
        return tuple(coerce_number(seed, int, "selection_seeds") for seed in value)
    except (ConfigError, TypeError) as error:
        raise ReproError(f"{path}: selection_seeds: expected a list of integers ({error})") from None


def parse_budgets(values: dict[str, Any], where: str) -> dict[str, float]:
    """``{canary: 0.02}``: a WER increase from 0 to 1 per eval set name."""
    if not isinstance(values, dict):
        raise ReproError(f"{where}: expected a mapping of eval set names to WER increases (0.02 = 2 points), got {values!r}")
    try:
        return {str(name): budget_limit(limit, f"{where}.{name}") for name, limit in values.items()}
    except ConfigError as error:
        raise ReproError(str(error)) from None


def parse_confirm_flag(text: str) -> EvalSet:
    """``--confirm-on test=data/test.jsonl``."""
    try:
        name, path = parse_eval_manifest(text)
    except ConfigError as error:
        raise ReproError(f"--confirm-on: {error}") from None
    return EvalSet(name, path)


def parse_budget_flags(texts: Sequence[str]) -> dict[str, float]:
    """``--max-wer-increase canary=0.02`` (repeatable)."""
    values = {}
    for text in texts:
        name, sep, limit = text.partition("=")
        if not sep or not name.strip() or not limit.strip():
            raise ReproError(f"--max-wer-increase {text!r}: expected NAME=INCREASE, e.g. canary=0.02 (2 WER points)")
        values[name.strip()] = limit.strip()
    return parse_budgets(values, "--max-wer-increase")


# --------------------------------------------------------------------------- what the seeds score


def confirmation_config(config: TrialConfig, choice: SweepChoice, confirm: EvalSet | None) -> TrialConfig:
    """The recipe with ``confirm`` scored first, in place of the select set (the recipe's first
    eval set where none is known); the other eval sets (a canary) follow. No ``confirm``: as is."""
    if confirm is None:
        return config
    replaced = choice.selected_on.name if choice.selected_on else config.primary_eval
    others = tuple((name, path) for name, path in config.eval_manifests if name not in (replaced, confirm.name))
    return config.replace(eval_manifests=((confirm.name, confirm.path), *others))


def check_budgets(budgets: dict[str, float], eval_sets: Sequence[str], tested: str, where: str) -> None:
    """Every budgeted set must be scored, and must not be the set the gain is tested on."""
    for name in budgets:
        if name == tested:
            raise ReproError(f"{where}: {name!r} is the eval set the gain is tested on; budget the others ({', '.join(n for n in eval_sets if n != tested) or 'none'})")
        if name not in eval_sets:
            raise ReproError(f"{where}: no eval set {name!r} is scored (scored: {', '.join(eval_sets)})")


def selection_bias(tested: EvalSet, selected: EvalSet | None) -> bool | None:
    """True when the tested set is the select set (same name, or the same manifest file under
    another name), False when it is another set, None when no select set is known."""
    if selected is None:
        return None
    if tested.name == selected.name:
        return True
    return bool(tested.path and selected.path and Path(tested.path).resolve() == Path(selected.path).resolve())


def default_seeds(config_seed: int, count: int, avoid: Sequence[int]) -> list[int]:
    """config seed + 1, + 2, ... skipping the seeds the sweep selected with: the recipe won
    partly because those seeds did well, so reusing them would flatter it."""
    seeds, candidate = [], config_seed
    while len(seeds) < count:
        candidate += 1
        if candidate not in avoid:
            seeds.append(candidate)
    return seeds
