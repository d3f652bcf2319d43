"""Repro: retrain one recipe across seeds and decide whether its WER gain is real.

``cli`` (the command), ``seeds`` (one Ray task per seed, determinism checks),
``significance`` (the bootstraps and the verdict), ``report`` (verdict.json, report.md, plots).
"""


class ReproError(Exception):
    """A repro run cannot go on (bad input, or no seed finished); the message says what to change."""
