"""A recipe is trained once: every search trial trains with the same seed, so a recipe trained
again would cost a whole trial and show nothing new. A proposal of a recipe the study already
trained is told that trial's result (``tell_repeat``) and the sampler is asked again, by the
sweep's searcher (``sweeps.search.searcher.SweepSearch``) and by the search benchmark's replays
alike. Optuna only, no Ray: the replays run without it.
"""

from __future__ import annotations

from typing import Any

# Asks of the sampler for one trial: proposals of recipes already trained are told their
# outcome and asked again up to this many times, then the repeat is trained (a space with
# fewer recipes than num_samples runs out of new ones; on the demo's 72 recipes a sweep of 16
# trials needs a few asks at most).
MAX_ASKS = 20


def tell_repeat(study: Any, asked: Any, earlier: Any) -> None:
    """Tell ``asked``, a proposal of a recipe the study's ``earlier`` trial trained, what that
    trial got: its reports, constraints, state and value, with user attribute ``repeat_of``."""
    from optuna.trial import TrialState

    if len(study.directions) == 1:  # a multi-objective study takes no reports
        for step, value in earlier.intermediate_values.items():
            asked.report(value, step)
    for name, value in earlier.constraints.items():
        asked.set_constraint(name, value)
    asked.set_user_attr("repeat_of", earlier.number)
    if earlier.state == TrialState.COMPLETE:
        study.tell(asked, earlier.values)
    else:
        study.tell(asked, state=earlier.state)
