"""``python -m benchmarks.bootstrap``: the repro bootstrap's speed, vectorised vs a plain loop.

Prints seconds for 10,000 resamples at several sizes and the ratio against a
one-resample-at-a-time numpy loop measured in the same run (the loop is timed on a few
hundred resamples and scaled, so the script takes seconds).
"""

from __future__ import annotations

import time

import numpy as np

from sweeps.repro.significance import PairedScores, bootstrap, resampling_blocks

SIZES = [(5, 1_000, 0), (5, 5_000, 0), (5, 5_000, 200), (10, 20_000, 0)]
RESAMPLES = 10_000
LOOP_RESAMPLES = 200


def synthetic_scores(seeds: int, utterances: int, speakers: int) -> PairedScores:
    rng = np.random.default_rng(0)
    ref_words = rng.integers(5, 20, size=utterances)
    baseline = rng.binomial(ref_words, 0.2)
    tuned = np.maximum(baseline[None, :] + rng.choice([-1, 0, 0, 1], size=(seeds, utterances)), 0)
    names = np.array([f"spk{i % speakers}" for i in range(utterances)] if speakers else [""] * utterances)
    baseline = np.broadcast_to(baseline, tuned.shape).copy()  # the baseline is the same model for every seed
    return PairedScores("heldout", np.arange(seeds), np.arange(utterances).astype(str), names, ref_words, baseline, tuned)


def loop_bootstrap(scores: PairedScores, resamples: int) -> np.ndarray:
    """The textbook version: one resample at a time."""
    blocks, _ = resampling_blocks(scores.speakers)
    members = [np.flatnonzero(blocks == b) for b in range(blocks.max() + 1)]
    rng = np.random.default_rng(0)
    out = np.empty((resamples, len(scores.seeds)))
    for r in range(resamples):
        picked = np.concatenate([members[b] for b in rng.integers(0, len(members), size=len(members))])
        gap = scores.baseline_errors[:, picked].sum(1) - scores.tuned_errors[:, picked].sum(1)
        out[r] = gap / scores.ref_words[picked].sum()
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    argparse.ArgumentParser(
        prog="python -m benchmarks.bootstrap",
        description="The repro bootstrap's speed: seconds for 10,000 resamples at several sizes, vectorised against "
        "a one-resample-at-a-time loop measured in the same run.",
    ).parse_args(argv)
    print(f"{'seeds':>5} {'utterances':>10} {'blocks':>12} {'vectorised s':>13} {'loop s (est.)':>14} {'speed-up':>9}")
    for seeds, utterances, speakers in SIZES:
        scores = synthetic_scores(seeds, utterances, speakers)
        started = time.perf_counter()
        draws = bootstrap(scores, resamples=RESAMPLES)
        vectorised = time.perf_counter() - started
        started = time.perf_counter()
        loop_bootstrap(scores, LOOP_RESAMPLES)
        loop = (time.perf_counter() - started) * RESAMPLES / LOOP_RESAMPLES
        unit = f"{draws.units} {draws.unit}s"
        print(f"{seeds:>5} {utterances:>10} {unit:>12} {vectorised:>13.2f} {loop:>14.1f} {loop / vectorised:>8.0f}x")


if __name__ == "__main__":
    main()
