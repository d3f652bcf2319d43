"""Constructed scores tables whose truth is known, shared by the repro tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def table_from_errors(
    baseline: np.ndarray, tuned: np.ndarray, ref_words: np.ndarray, speakers: list[str] | None = None,
    seeds: list[int] | None = None, eval_set: str = "heldout",
) -> pd.DataFrame:
    """A scores table from error matrices (seeds x utterances); hypotheses encode the error count
    so a changed error count is also a changed hypothesis."""
    baseline, tuned = np.atleast_2d(baseline), np.atleast_2d(tuned)
    n_seeds, n = tuned.shape
    baseline = np.broadcast_to(baseline, tuned.shape)
    seeds = seeds or list(range(n_seeds))
    speakers = speakers if speakers is not None else [""] * n
    frames = []
    for i, seed in enumerate(seeds):
        for system, errors in (("baseline", baseline[i]), ("tuned", tuned[i])):
            frames.append(pd.DataFrame({
                "seed": seed, "system": system, "eval_set": eval_set,
                "utterance_id": [f"utt{j:04d}" for j in range(n)], "speaker": speakers,
                "ref_words": ref_words, "errors": errors,
                "reference": [f"reference {j}" for j in range(n)],
                "hypothesis": [f"hypothesis {j} with {e} errors" for j, e in enumerate(errors)],
            }))
    return pd.concat(frames, ignore_index=True)


def shifted_table(
    shifts: list[float], n: int = 600, words: int = 10, base_errors: int = 3, seed: int = 0, speakers: int = 0,
) -> pd.DataFrame:
    """Every utterance has ``words`` reference words and ``base_errors`` baseline errors; for seed i
    a random share |shifts[i]| of utterances gets one error fewer (shift > 0, a gain) or more
    (shift < 0, a regression). So seed i's delta is about shifts[i] / words."""
    rng = np.random.default_rng(seed)
    ref_words = np.full(n, words)
    baseline = np.full(n, base_errors)
    tuned = np.stack([baseline - np.sign(s) * (rng.random(n) < abs(s)) for s in shifts])
    names = [f"spk{j % speakers}" for j in range(n)] if speakers else None
    return table_from_errors(baseline, tuned, ref_words, speakers=names)


def noisy_table(n_seeds: int = 5, n: int = 600, seed: int = 0) -> pd.DataFrame:
    """No real change: tuned moves one error up or down on a random 20% of utterances, symmetrically."""
    rng = np.random.default_rng(seed)
    ref_words = rng.integers(5, 20, size=n)
    baseline = rng.binomial(ref_words, 0.2)
    moves = rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], size=(n_seeds, n))
    tuned = np.maximum(baseline + moves, 0)
    return table_from_errors(baseline, tuned, ref_words)
