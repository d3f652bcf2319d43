"""What proposes the next recipe in a replay: random search over the sweep's space, every
grid recipe in a random order, or Optuna's TPE set up as the sweep sets it up
(``sweeps/search/space.py``); and, as a bound on TPE rather than a searcher, an oracle that
starts as TPE does and then knows where the good recipes are.

A searcher proposes a recipe's searched values (``propose``) and is told how that trial
went (``observe``), one trial at a time: the replay runs a sweep with
``max_concurrent_trials = 1``, where Ray's OptunaSearch also asks and tells in turn.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from benchmarks.search.table import SearchTable
from sweeps.search.repeats import MAX_ASKS, tell_repeat


class Searcher(Protocol):
    def propose(self) -> dict[str, Any]: ...

    def observe(self, trial: Any) -> None: ...


class ShuffledGrid:
    """The sweep's points first, then the rest of the table's grid in a random order: uniform
    sampling of the table without replacement (a fresh order if the budget outlasts the grid).
    A stronger baseline than random search over the sweep's space, which can draw a recipe
    twice and draws a grid value of a range by the share of the range nearest it."""

    def __init__(self, table: SearchTable, seed: int, points: list[dict[str, Any]] = ()):
        self.table = table
        self.rng = np.random.default_rng(seed)
        first = list(dict.fromkeys(table.recipe_for(point) for point in points))
        self.queue = first + self._shuffled([r for r in table.recipes if r not in first])

    def propose(self) -> dict[str, Any]:
        if not self.queue:
            self.queue = self._shuffled(list(self.table.recipes))
        return self.table.params(self.queue.pop(0))

    def observe(self, trial: Any) -> None:
        pass

    def _shuffled(self, recipes: list[str]) -> list[str]:
        return [recipes[i] for i in self.rng.permutation(len(recipes))]


class StudySearch:
    """An Optuna sampler driven with ``study.ask()``/``tell()`` over the sweep's search space
    (ranges as Optuna floats or ints, sets as categoricals), the sweep's points enqueued
    first, as Ray's OptunaSearch does.

    ``stopped``: how a trial ASHA stopped is told: ``"complete"`` with its partial WER (what
    Ray 2.60's OptunaSearch does) or ``"pruned"`` (the fix; every report the trial made is its
    intermediate values, the stopping one included, so TPE ranks it by how far it got and how
    well it did there). ``canary_budget``: when given, a fully trained trial carries the
    constraint ``canary rise - budget`` (``Trial.set_constraint``, optuna 5's replacement for
    the deprecated ``constraints_func``), so TPE models infeasible trials apart; a stopped
    trial has no canary score and so no constraint. ``recipe_of``: when given (it names the
    recipe a proposal trains, ``SearchTable.recipe_for``), a recipe is never trained twice: a
    proposal of one already trained is told that trial's outcome again at no cost, and the
    sampler is asked anew (a sweep trains every trial with the same seed, so a repeat would
    cost a whole trial and show nothing new).
    """

    def __init__(self, search: dict[str, dict[str, Any]], points: list[dict[str, Any]], sampler: Any,
                 stopped: str = "complete", canary_budget: float | None = None,
                 recipe_of: Callable[[dict[str, Any]], str] | None = None):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if stopped not in ("complete", "pruned"):
            raise ValueError(f"stopped: 'complete' or 'pruned', got {stopped!r}")
        self.search, self.stopped, self.canary_budget, self.recipe_of = search, stopped, canary_budget, recipe_of
        self.study = optuna.create_study(direction="minimize", sampler=sampler)
        for point in points:
            self.study.enqueue_trial(dict(point))
        self.trial = None
        self.trained: dict[str, Any] = {}  # recipe -> the study's trial that trained it

    def propose(self) -> dict[str, Any]:
        for ask in range(1, MAX_ASKS + 1):
            self.trial = self.study.ask()
            params = {name: suggest(self.trial, name, spec) for name, spec in self.search.items()}
            earlier = self.trained.get(self.recipe_of(params)) if self.recipe_of else None
            if earlier is None or ask == MAX_ASKS:  # the last ask of a space it keeps repeating is trained
                return params
            tell_repeat(self.study, self.trial, earlier)

    def observe(self, trial: Any) -> None:
        from optuna.trial import TrialState

        asked, self.trial = self.trial, None
        for report, wer in enumerate(trial.reports, start=1):
            asked.report(wer, report)  # Ray reports training_iteration as the step
        if trial.status == "failed":
            self.study.tell(asked, state=TrialState.FAIL)
        elif trial.status == "stopped" and self.stopped == "pruned":
            self.study.tell(asked, state=TrialState.PRUNED)
        else:
            if trial.status == "completed" and self.canary_budget is not None:
                asked.set_constraint("canary", trial.canary_rise - self.canary_budget)
            self.study.tell(asked, trial.dev_wer)
        if self.recipe_of:
            self.trained[trial.recipe] = self.study.trials[asked.number]


class TpeSearch(StudySearch):
    """``optuna.samplers.TPESampler(seed, n_startup_trials)``, as the sweep builds it."""

    def __init__(self, search: dict[str, dict[str, Any]], points: list[dict[str, Any]], seed: int,
                 startup: int, stopped: str = "complete", canary_budget: float | None = None,
                 recipe_of: Callable[[dict[str, Any]], str] | None = None):
        import optuna

        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        super().__init__(search, points, sampler, stopped, canary_budget, recipe_of)


class RandomSearch(StudySearch):
    """Random search over the sweep's space: ``optuna.samplers.RandomSampler(seed)`` after the
    sweep's points, a range sampled as the sweep declares it (log-uniform for a log range),
    with replacement. TPE's startup trials are this sampler's draws (TPESampler samples them
    with a RandomSampler of its own seed), so with the same seed the two propose the same
    recipes until TPE's model takes over, and a replay compares what the model buys."""

    def __init__(self, search: dict[str, dict[str, Any]], points: list[dict[str, Any]], seed: int,
                 recipe_of: Callable[[dict[str, Any]], str] | None = None):
        import optuna

        super().__init__(search, points, optuna.samplers.RandomSampler(seed=seed), recipe_of=recipe_of)


class OracleAfterStartup:
    """A bound, not a searcher: random search's draws for TPE's startup trials (the sweep's
    points first, as TPE's first trials are with the same seed), then the good recipes, truest
    first, skipping any that ``completes`` says ASHA would stop before its end. Any searcher
    that starts as TPE does reaches a good recipe no sooner than this, so its reach ratio is
    the floor of TPE's at that startup. When the good recipes are used up it draws at random."""

    def __init__(self, random: RandomSearch, startup: int, good_truest_first: list[str], table: SearchTable,
                 completes: Callable[[str], bool]):
        self.random, self.startup, self.table, self.completes = random, startup, table, completes
        self.queue = list(good_truest_first)
        self.proposed, self.from_random = 0, False

    def propose(self) -> dict[str, Any]:
        self.proposed += 1
        if self.proposed > self.startup:
            finishing = next((recipe for recipe in self.queue if self.completes(recipe)), None)
            if finishing is not None:
                self.queue.remove(finishing)
                self.from_random = False
                return self.table.params(finishing)
        self.from_random = True
        return self.random.propose()

    def observe(self, trial: Any) -> None:
        if self.from_random:
            self.random.observe(trial)


def suggest(trial: Any, name: str, spec: dict[str, Any]) -> Any:
    """One searched field, as the sweep's ``SearchParam.suggest`` asks Optuna for it."""
    if "choices" in spec:
        return trial.suggest_categorical(name, list(spec["choices"]))
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if spec.get("kind") == "int" or (spec.get("kind") is None and isinstance(low, int) and isinstance(high, int)):
        return trial.suggest_int(name, int(low), int(high), step=int(spec.get("step") or 1), log=log)
    return trial.suggest_float(name, float(low), float(high), step=spec.get("step"), log=log)
