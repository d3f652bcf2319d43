"""The sweep's searchers: Ray Tune's ``OptunaSearch`` telling the study what it misses, and
``FixedRecipes`` for racing the finalists.

Ray 2.60's ``OptunaSearch`` tells a trial that ASHA stopped as COMPLETE with its partial
WER, so TPE learns from truncated runs as if they were final, and it never calls Optuna's
constraint API. ``SweepSearch`` keeps everything else and changes what reaches the study
when a trial ends:

- a trial stopped before its final report is PRUNED, with its last WER as an intermediate
  value at its last report (TPE ranks pruned trials after complete ones, by how far they got);
- every budgeted eval set (``max_wer_increase``) becomes a constraint, WER increase minus
  budget (> 0: infeasible, by the rule the winner is chosen by), so TPE moves toward
  recipes that keep the budgets;
- with ``objectives``, the study is multi-objective: the select set's WER and each other
  objective set's WER increase.

A recipe is trained once: every trial trains with the same seed (``trial.seed``), so a
proposal of a recipe a finished trial already trained (a ``grid`` range makes recipes repeat)
would cost a whole trial and show nothing new. The study is told the earlier trial's outcome
for it (state, WER, reports, constraints; user attribute ``repeat_of``) and asked again;
Tune's trial then trains the next new recipe. A recipe still training may be proposed again.

On ``--resume`` (Ray restores the searcher from its last saved state) a study trial left
RUNNING that the restored searcher does not know is marked FAIL: it was asked before the
driver died but after that state was saved, so no Tune trial will ever end it. If it was
one of the ``points_to_evaluate``, that point is enqueued again, so the sweep still tries it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweeps.budget import budget_constraint
from sweeps.search.repeats import MAX_ASKS, tell_repeat
from sweeps.search.trial import COMPLETED_KEY
from trainable.metrics import PRIMARY_TUNED, wer_increase_name

ITERATION_KEY = "training_iteration"


class SweepSearch(OptunaSearch):
    def __init__(self, *, budgets: tuple[tuple[str, float], ...] = (), **kwargs: Any):
        super().__init__(**kwargs)
        self._budgets = tuple(budgets)

    def suggest(self, trial_id: str) -> dict | None:
        repeated = []  # the trials whose recipes Optuna proposed again
        for ask in range(1, MAX_ASKS + 1):
            config = super().suggest(trial_id)
            earlier = self._trained_before(self._ot_trials[trial_id]) if isinstance(config, dict) else None
            if earlier is None or ask == MAX_ASKS:
                break
            tell_repeat(self._ot_study, self._ot_trials.pop(trial_id), earlier)
            repeated.append(self._trial_name(earlier.number))
        if repeated:
            kept = (f"; no new recipe in {MAX_ASKS} proposals, so this trial trains {self._trial_name(earlier.number)}'s again"
                    if earlier is not None else "")
            print(f"search: {repeats_line(repeated)}{kept}", flush=True)
        return config

    def _trial_name(self, number: int) -> str:
        """``trial <Tune id>`` for a study trial, as the results name it ("study trial N" for
        one this searcher did not ask: the study's numbers count told repeats too)."""
        tune_id = next((trial_id for trial_id, ot_trial in self._ot_trials.items() if ot_trial.number == number), None)
        return f"trial {tune_id}" if tune_id else f"study trial {number}"

    def _trained_before(self, ot_trial: Any) -> Any:
        """The study's finished trial (complete or stopped) that trained ``ot_trial``'s recipe, if any."""
        from optuna.trial import TrialState

        recipe = getattr(self._space, "recipe", None)
        if recipe is None:
            return None
        wanted = recipe(ot_trial.params)
        for trial in self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if trial.number != ot_trial.number and recipe(trial.params) == wanted:
                return trial
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        if trial_id in self._completed_trials or trial_id not in self._ot_trials or error or not result:
            return super().on_trial_complete(trial_id, result=result, error=error)
        ot_trial = self._ot_trials[trial_id]
        if self._finished_in_study(ot_trial):  # a resumed sweep ends again a trial optuna.db holds as ended
            self._completed_trials.add(trial_id)
            return None
        for name, limit in self._budgets:
            increase = result.get(wer_increase_name(name))
            if _finite(increase):
                ot_trial.set_constraint(name, budget_constraint(increase, limit))
        if not isinstance(self.metric, list):  # a multi-objective study takes no reports
            self._report_last(ot_trial, result)
        if result.get(COMPLETED_KEY):
            return super().on_trial_complete(trial_id, result=result, error=False)
        self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            # A trial that ended in optuna.db after Ray's last saved state comes back unfinished
            # on --resume and reports again: the study keeps it as it ended.
            pass

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.fail_orphaned_trials()

    def fail_orphaned_trials(self) -> list[int]:
        """Mark FAIL the study's RUNNING trials that this searcher does not track, and say so
        in one line; returns their numbers.

        ``optuna.db`` records each ``ask()`` as it happens, but Ray saves the searcher state
        only now and then: a trial asked after the last save and before the driver died is
        RUNNING in the study while the restored searcher (which asks a new one instead)
        never heard of it. Left RUNNING, the study would hold a trial the sweep never ran.
        """
        from optuna.trial import TrialState

        if self._ot_study is None:
            return []
        tracked = {ot_trial._trial_id for ot_trial in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        orphans = [trial for trial in running if trial._trial_id not in tracked]
        for trial in orphans:
            self._ot_study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        requeued = self._requeue_lost_points(orphans, tracked)
        if orphans:
            numbers = ", ".join(str(trial.number) for trial in orphans)
            again = f"; the points_to_evaluate recipe of trial(s) {', '.join(map(str, requeued))} is queued again" if requeued else ""
            print(f"note: resumed study {self._study_name!r}: trial(s) {numbers} were asked before the driver stopped "
                  f"but never started in the sweep; marked FAIL in the Optuna study{again}", flush=True)
        return [trial.number for trial in orphans]

    def _requeue_lost_points(self, orphans: list[Any], tracked: set[int]) -> list[int]:
        """Enqueue again each ``points_to_evaluate`` recipe whose only study trials were
        orphaned: the study handed it out, the sweep never ran it, and without this the
        resumed sweep would never try it (the user's own recipe, often the baseline).
        Returns the numbers of the orphans whose point is queued again."""
        from optuna.trial import TrialState

        point = "fixed_params"  # the system attribute Optuna keeps an enqueued trial's parameters in
        taken = [trial.system_attrs.get(point) for trial in self._ot_study.get_trials(deepcopy=False)
                 if trial._trial_id in tracked or trial.state == TrialState.WAITING]
        requeued = []
        for trial in orphans:
            params = trial.system_attrs.get(point)
            if params is not None and params not in taken:
                self._ot_study.enqueue_trial(params)
                taken.append(params)
                requeued.append(trial.number)
        return requeued

    def _report_last(self, ot_trial: Any, result: dict) -> None:
        """The result that ended the trial never reaches ``on_trial_result`` (ASHA stops a trial
        at its last report too); record it, so TPE ranks a pruned trial by how it stood when
        it was stopped, and the study holds every report of a finished one."""
        value, step = result.get(self.metric), result.get(ITERATION_KEY)
        if _finite(value) and step is not None:
            with warnings.catch_warnings():  # a step already reported is kept as it was
                warnings.simplefilter("ignore")
                ot_trial.report(value, step)

    def _finished_in_study(self, ot_trial: Any) -> bool:
        from optuna.trial import TrialState

        ended = self._ot_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        return any(trial.number == ot_trial.number for trial in ended)


def repeats_line(repeated: list[str]) -> str:
    """What the console says of proposals of recipes already trained, by the trials that trained them."""
    trained = sorted(set(repeated))
    if len(repeated) == 1:
        return f"Optuna proposed a recipe already trained (by {trained[0]}): the study is told that result again, and Optuna asked for another"
    return (f"Optuna proposed {len(repeated)} recipes already trained (by {', '.join(trained)}): the study is told each result "
            "again, and Optuna asked for others")


def objective_metrics(select_on: str, objectives: tuple[str, ...]) -> list[str]:
    """Metric names of a multi-objective study: the select set's WER, the others' increases."""
    return [PRIMARY_TUNED, *(wer_increase_name(name) for name in objectives if name != select_on)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class FixedRecipes(Searcher):
    """A Tune searcher that proposes given recipes, each once, then says it is finished.
    Its state (what it has proposed) is saved with the experiment, so a resumed race does
    not propose a recipe twice."""

    def __init__(self, recipes: list[dict[str, Any]], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.recipes = list(recipes)
        self.proposed = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        if self.proposed >= len(self.recipes):
            return Searcher.FINISHED
        self.proposed += 1
        return dict(self.recipes[self.proposed - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def get_state(self) -> dict:
        return {"recipes": self.recipes, "proposed": self.proposed}

    def set_state(self, state: dict) -> None:
        self.recipes, self.proposed = state["recipes"], state["proposed"]

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))
