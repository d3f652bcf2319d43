"""A WER budget on an eval set: how much its WER may rise over the base model's.

Shared by the sweep (which chooses its winner within the budget) and repro (which checks
the budget on every seed), so both call the same rule.
"""

from __future__ import annotations

from typing import Any


def over_budget(increase: Any, limit: float) -> Any:
    """Whether a WER increase (a float, or a pandas Series of them) breaks ``limit``. A hair of
    slack: WERs are ratios of word counts, and 0.0344 - 0.0166 must pass a 0.02 budget."""
    return increase > limit + 1e-9
