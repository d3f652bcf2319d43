"""A WER budget on an eval set: how much its WER may rise over the base model's.

Shared by the sweep (which chooses its winner within the budget) and repro (which decides
the budget with a non-inferiority test over seeds and utterances), so both read limits and
compare against them with the same rule.
"""

from __future__ import annotations

from typing import Any

from trainable.config_io import ConfigError, coerce_number
from trainable.metrics import metric_name

# A hair of slack in every WER comparison against a limit: WERs are ratios of word counts, and
# 0.0344 - 0.0166 must pass a 0.02 budget.
WER_SLACK = 1e-9


def over_budget(increase: Any, limit: float) -> Any:
    """Whether a WER increase (a float, or a pandas Series of them) breaks ``limit`` (beyond ``WER_SLACK``)."""
    return increase > limit + WER_SLACK


def budget_constraint(increase: float, limit: float) -> float:
    """A budget as an Optuna constraint (feasible at 0 or below): the increase minus the limit,
    above 0 exactly when ``over_budget`` says so, so an increase at the limit is feasible to
    the sampler as it is to the winner's choice (0.32 - 0.30 - 0.02 is 1.7e-17, not 0)."""
    excess = increase - limit
    return excess if over_budget(increase, limit) else min(excess, 0.0)


def budget_limit(value: Any, where: str) -> float:
    """A budget's allowed WER increase, from 0 to 1 (0.02 = 2 points); ``where`` names it on error."""
    limit = coerce_number(value, float, where)
    if not 0.0 <= limit < 1.0:
        raise ConfigError(f"{where}: a WER increase between 0 and 1 (0.02 = 2 points), got {value!r}")
    return limit


def within_budget(trials: Any, budgets: tuple[tuple[str, float], ...]) -> Any:
    """Per row of a results table: does every budgeted eval set stay within its allowed WER
    increase? A trial without that eval set's scores (errored) is not within it."""
    import pandas as pd

    keep = pd.Series(True, index=trials.index)
    for name, limit in budgets:
        tuned, baseline = (trials.get(metric_name(name, system)) for system in ("tuned", "baseline"))
        if tuned is None or baseline is None:
            return pd.Series(False, index=trials.index)
        increase = tuned - baseline
        keep &= increase.notna() & ~over_budget(increase, limit)
    return keep
