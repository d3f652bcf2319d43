"""The names of a run's metrics: built and parsed here and nowhere else.

A run scores every eval set with two systems (the base model, and the model with the
adapter), each in three ways (WER after Whisper's normaliser, orthographic WER, CER on
the normalised text). As flat scalars (a Tune report, a results row) these are
``<eval set>_<system>_<score>``, e.g. ``canary_tuned_wer``; ``eval_wer`` and ``baseline_wer``
repeat the primary eval set's tuned and baseline WER, because that is what the sweep
optimises and ASHA reads at every report.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

SYSTEMS = ("baseline", "tuned")
SCORES = ("wer", "orthographic_wer", "cer")
PRIMARY_TUNED = "eval_wer"
PRIMARY_BASELINE = "baseline_wer"
RUN_FIELDS = ("steps", "train_seconds", "elapsed_seconds", "steps_per_second", "nonfinite_steps")


def metric_value(value: Any) -> float:
    """A metric as a float; NaN when it was never reported (None) or is no number."""
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def metric_name(eval_set: str, system: str, score: str = "wer") -> str:
    return f"{eval_set}_{system}_{score}"


def parse_metric_name(name: str) -> tuple[str, str, str] | None:
    """(eval set, system, score) of a per-eval-set metric name, or None for any other name."""
    for system in SYSTEMS:
        # Longest score first: "x_tuned_orthographic_wer" is eval set "x", not "x_tuned_orthographic".
        for score in sorted(SCORES, key=len, reverse=True):
            suffix = f"_{system}_{score}"
            if name.endswith(suffix) and len(name) > len(suffix):
                return name[: -len(suffix)], system, score
    return None


def eval_set_names(names: Iterable[str]) -> list[str]:
    """Eval sets in the order their metrics first appear."""
    found = (parse_metric_name(name) for name in names)
    return list(dict.fromkeys(parsed[0] for parsed in found if parsed))


def scores_by_eval_set(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"canary": {"tuned_wer": .., "baseline_wer": .., ...}}`` from flat metrics."""
    scores: dict[str, dict[str, Any]] = {}
    for name, value in metrics.items():
        parsed = parse_metric_name(name)
        if parsed:
            eval_set, system, score = parsed
            scores.setdefault(eval_set, {})[f"{system}_{score}"] = value
    return scores


def wer_increase_name(eval_set: str) -> str:
    """How much an eval set's WER rose with the adapter (tuned - baseline): what a budget limits."""
    return f"{eval_set}_wer_increase"


def wer_metrics(primary: str, wers: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """From ``{eval set: {"baseline": wer, "tuned": wer}}``: each set's two WERs, the primary
    set's again under the short names, and every other set's WER increase."""
    metrics = {}
    for eval_set, systems in wers.items():
        for system in SYSTEMS:
            metrics[metric_name(eval_set, system)] = systems[system]
        if eval_set != primary:
            metrics[wer_increase_name(eval_set)] = systems["tuned"] - systems["baseline"]
    metrics[PRIMARY_TUNED] = wers[primary]["tuned"]
    metrics[PRIMARY_BASELINE] = wers[primary]["baseline"]
    return metrics


def final_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Flat scalars of a finished run (its summary.json): every eval set's baseline and
    tuned WER both ways and CER, WER increases, the primary WERs under their short names,
    and run figures."""
    metrics = {}
    for eval_set, systems in summary["evals"].items():
        for system, scores in systems.items():
            for score in SCORES:
                metrics[metric_name(eval_set, system, score)] = scores[score]
    wers = {eval_set: {system: scores["wer"] for system, scores in systems.items()} for eval_set, systems in summary["evals"].items()}
    metrics.update(wer_metrics(summary["primary_eval"], wers))
    for key in RUN_FIELDS:
        metrics[key] = summary[key]
    return metrics
