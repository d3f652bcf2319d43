"""ASHA as a sweep runs it (Ray Tune 2.60's ``AsyncHyperBandScheduler``), replayed report by report.

The sweep uses one bracket and counts time in eval reports. Rungs sit at
``grace_period * reduction_factor**k`` reports below ``max_t``. A trial reaching a rung
continues only if its WER is no worse than the ``1 - 1/reduction_factor`` quantile (linear,
``np.nanpercentile``) of the values recorded at that rung so far: the first trial at a rung
always continues, and every trial's value is recorded whether it stops or not. A trial whose
report count reaches ``max_t`` is done. Tests hold these decisions against Ray's own
``_Bracket``; this copy exists so a replay needs neither Ray nor Trial objects.
"""

from __future__ import annotations

import numpy as np


class AshaRungs:
    """One ASHA bracket minimising WER; trials are named by any hashable key."""

    def __init__(self, max_t: int, grace_period: int, reduction_factor: float):
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
        # Highest rung first, as Ray keeps them: a report is judged at the highest rung it reached.
        self.rungs = [(grace_period * reduction_factor**k, {}) for k in reversed(range(count))]

    @property
    def milestones(self) -> list[float]:
        return sorted(milestone for milestone, _ in self.rungs)

    def continues(self, trial, report: int, wer: float) -> bool:
        """Ray's ``on_trial_result``: whether the trial trains on after this report."""
        if report >= self.max_t:
            return False  # a full trial: Ray stops it at max_t, and it has nothing left to train
        return self._judge(trial, report, wer)

    def record_final(self, trial, report: int, wer: float) -> None:
        """Ray's ``on_trial_complete``: a trial's last result is recorded at any rung it
        reached but was not yet judged at (the max_t rung of a full trial)."""
        self._judge(trial, report, wer)

    def _judge(self, trial, report: int, wer: float) -> bool:
        reward = -wer  # Ray maximises metric_op * metric; the sweep minimises WER
        for milestone, recorded in self.rungs:
            if report < milestone or trial in recorded:
                continue
            cutoff = np.nanpercentile(list(recorded.values()), (1 - 1 / self.reduction_factor) * 100) if recorded else None
            recorded[trial] = reward
            return cutoff is None or not reward < cutoff
        return True
