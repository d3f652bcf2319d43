"""One sweep replayed on the search table: trials, ASHA, the winner, racing, and what it cost.

A replayed trial of a recipe observes the recipe's run with the sweep's training seed (every
sweep trial trains with ``trial.seed``), report by report; ASHA may stop it after any report.
Trials run one after another (``max_concurrent_trials = 1``): with concurrency, which results
TPE and ASHA have seen when they decide depends on timing, which a table cannot replay.
Compute is counted in training steps actually run.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from benchmarks.search.asha import AshaRungs
from benchmarks.search.searchers import OracleAfterStartup, RandomSearch, Searcher, ShuffledGrid, TpeSearch
from benchmarks.search.table import GroundTruth, Run, SearchTable
from sweeps.budget import over_budget

COMPLETED, STOPPED, FAILED = "completed", "stopped", "failed"


@dataclass(frozen=True)
class ReplayedTrial:
    """What a sweep trial saw and cost."""

    number: int
    recipe: str
    status: str  # completed | stopped (by ASHA) | failed
    reports: tuple[float, ...]  # dev WER of every eval report it made
    steps: int  # training steps it ran
    dev_wer: float  # its last reported dev WER: the final one when completed
    canary_rise: float  # observed on the sweep's seed; NaN unless completed


def run_trial(number: int, run: Run, rungs: AshaRungs | None) -> ReplayedTrial:
    """Feed the run's reports to ASHA until it stops the trial or the curve ends."""
    curve = run.dev_wer_curve
    for report, wer in enumerate(curve, start=1):
        if rungs is not None and not rungs.continues(number, report, wer) and report < len(curve):
            return ReplayedTrial(number, run.recipe, STOPPED, curve[:report], run.curve_steps[report - 1], wer, math.nan)
    if not run.completed:
        return ReplayedTrial(number, run.recipe, FAILED, curve, run.steps, curve[-1] if curve else math.nan, math.nan)
    if rungs is not None:
        rungs.record_final(number, len(curve), run.dev_wer)
    return ReplayedTrial(number, run.recipe, COMPLETED, curve, run.steps, run.dev_wer, run.canary_rise)


def replay_search(table: SearchTable, searcher: Searcher, num_samples: int, rungs: AshaRungs | None = None) -> list[ReplayedTrial]:
    trials = []
    for number in range(num_samples):
        recipe = table.recipe_for(searcher.propose())
        trial = run_trial(number, table.sweep_run(recipe), rungs)
        searcher.observe(trial)
        trials.append(trial)
    return trials


def steps_to_reach(trials: list[ReplayedTrial], good: frozenset[str]) -> float:
    """Steps run until (and including) the first fully trained trial of a good recipe; +inf if none."""
    spent = 0
    for trial in trials:
        spent += trial.steps
        if trial.status == COMPLETED and trial.recipe in good:
            return float(spent)
    return math.inf


def choose_single_seed(trials: list[ReplayedTrial], budget: float) -> str | None:
    """What the sweep picks today: the fully trained trial with the best observed final dev
    WER among those whose observed canary rise keeps the budget (earlier trial on a tie)."""
    eligible = [t for t in trials if t.status == COMPLETED and not over_budget(t.canary_rise, budget)]
    return min(eligible, key=lambda t: (t.dev_wer, t.number)).recipe if eligible else None


@dataclass(frozen=True)
class Race:
    winner: str | None
    steps: int  # the retrains' steps
    short_of_seeds: bool  # a finalist had fewer new seeds in the table than asked for


def race(trials: list[ReplayedTrial], table: SearchTable, finalists: int, seeds: int) -> Race:
    """Retrain the top ``finalists`` recipes (fully trained, observed canary within budget,
    best observed dev WER; each recipe once) with ``seeds`` new seeds from the table, and pick
    the best mean dev WER over the sweep's seed and the new ones among finalists whose mean
    canary rise keeps the budget."""
    budget = table.canary_budget
    ranked = sorted((t for t in trials if t.status == COMPLETED and not over_budget(t.canary_rise, budget)), key=lambda t: (t.dev_wer, t.number))
    chosen = list(dict.fromkeys(t.recipe for t in ranked))[:finalists]
    steps, short, scored = 0, False, []
    for recipe in chosen:
        new = table.other_runs(recipe)[:seeds]
        short |= len(new) < seeds
        steps += sum(run.steps for run in new)
        runs = [table.sweep_run(recipe), *new]
        dev = sum(run.dev_wer for run in runs) / len(runs)
        rise = sum(run.canary_rise for run in runs) / len(runs)
        if not over_budget(rise, budget):
            scored.append((dev, len(scored), recipe))
    return Race(winner=min(scored)[2] if scored else None, steps=steps, short_of_seeds=short)


SAMPLERS = ("random", "grid", "tpe", "oracle")


@dataclass(frozen=True)
class SearcherSpec:
    """A searcher by name: ``random`` (random search over the sweep's space), ``grid`` (the
    table's recipes in a random order), ``tpe``, or ``oracle`` (TPE's random startup, then the
    good recipes: a bound on TPE, not a searcher), then any of ``+asha`` (the sweep's
    scheduler), ``+pruned`` (ASHA-stopped trials told to TPE as PRUNED, not COMPLETE),
    ``+canary`` (TPE with the canary budget as a constraint) and ``+dedup`` (random search or
    TPE never trains a recipe twice: a repeated proposal is told the earlier outcome and asked
    again). ``tpe+asha`` is today's sweep."""

    name: str
    sampler: str
    asha: bool
    pruned: bool
    canary: bool
    dedup: bool = False

    @property
    def is_bound(self) -> bool:
        """An oracle's row bounds what TPE could do; searcher goals are not asked of it."""
        return self.sampler == "oracle"

    @classmethod
    def parse(cls, name: str) -> "SearcherSpec":
        sampler, *options = name.split("+")
        unknown = set(options) - {"asha", "pruned", "canary", "dedup"}
        if sampler not in SAMPLERS or unknown or len(set(options)) != len(options):
            raise ValueError(f"searcher {name!r}: {', '.join(SAMPLERS)}, then +asha, +pruned, +canary, +dedup")
        if "pruned" in options and "asha" not in options:
            raise ValueError(f"searcher {name!r}: +pruned needs +asha (only ASHA stops trials)")
        if sampler != "tpe" and {"pruned", "canary"} & set(options):
            raise ValueError(f"searcher {name!r}: {sampler} learns nothing, so +pruned/+canary change nothing")
        if sampler in ("grid", "oracle") and "dedup" in options:
            raise ValueError(f"searcher {name!r}: +dedup is for random and tpe ({sampler} proposes each recipe once already, or is a bound)")
        return cls(name, sampler, "asha" in options, "pruned" in options, "canary" in options, "dedup" in options)


@dataclass(frozen=True)
class Settings:
    """Everything a replay needs besides the table and the sampler seed."""

    num_samples: int
    startup_trials: int
    points: tuple[dict[str, Any], ...]
    max_t: int
    grace_period: int
    reduction_factor: float
    finalists: int = 3
    race_seeds: int = 2


@dataclass(frozen=True)
class Outcome:
    """One replayed sweep, scored against the ground truth."""

    reach_steps: float  # +inf: never trained a good recipe to the end
    search_steps: int
    chosen: str | None  # by the sweep's single-seed rule
    race: Race
    stopped_good: bool  # ASHA stopped a trial of a good recipe


def replay(table: SearchTable, truth: GroundTruth, spec: SearcherSpec, seed: int, settings: Settings) -> Outcome:
    rungs = AshaRungs(settings.max_t, settings.grace_period, settings.reduction_factor) if spec.asha else None
    recipe_of = table.recipe_for if spec.dedup else None
    if spec.sampler == "grid":
        searcher: Searcher = ShuffledGrid(table, seed, list(settings.points))
    elif spec.sampler == "random":
        searcher = RandomSearch(table.search, list(settings.points), seed, recipe_of=recipe_of)
    elif spec.sampler == "oracle":
        searcher = oracle(table, truth, seed, settings, rungs)
    else:
        searcher = TpeSearch(table.search, list(settings.points), seed, settings.startup_trials,
                             stopped="pruned" if spec.pruned else "complete",
                             canary_budget=table.canary_budget if spec.canary else None, recipe_of=recipe_of)
    trials = replay_search(table, searcher, settings.num_samples, rungs)
    return Outcome(
        reach_steps=steps_to_reach(trials, truth.good),
        search_steps=sum(t.steps for t in trials),
        chosen=choose_single_seed(trials, table.canary_budget),
        race=race(trials, table, settings.finalists, settings.race_seeds),
        stopped_good=any(t.status == STOPPED and t.recipe in truth.good for t in trials),
    )


def oracle(table: SearchTable, truth: GroundTruth, seed: int, settings: Settings, rungs: AshaRungs | None) -> OracleAfterStartup:
    """TPE's startup (random search's draws with this seed), then the good recipes by true dev
    WER, each only if its sweep-seed run would finish under ASHA as the rungs stand."""

    def completes(recipe: str) -> bool:
        run = table.sweep_run(recipe)
        if rungs is None:
            return run.completed
        return run_trial(-1, run, copy.deepcopy(rungs)).status == COMPLETED

    good = sorted(truth.good, key=lambda recipe: (truth.dev_wer(recipe), recipe))
    return OracleAfterStartup(RandomSearch(table.search, list(settings.points), seed), settings.startup_trials, good, table, completes)
