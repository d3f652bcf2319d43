"""What is in the data, said before any training step: the problems that fail nothing.

Per set: utterances, hours, speakers, duration min/median/max, the transcripts' character
set; the speakers each eval set shares with training (reported, not refused: the leakage
guard refuses shared audio, shared voices are a property of the split); and the training
label tokens the tokenizer maps to its unknown token, with examples and the characters
responsible. A character tokenizer without punctuation turns every "," and "!" of a
"Hello, World!" transcript into ``<unk>`` and the model learns to emit it; nothing fails.

A run builds the report from its decoded sets (``report_from_sets``); a sweep driver builds it
once, before Ray starts, from the sources and the audio files' headers, without decoding
(``report_from_config``). Both give the same fields.
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from trainable.audio import AudioError, header_seconds
from trainable.manifest import ManifestError, RowProblem, Utterance
from trainable.sources import is_hub_spec, read_source
from trainable.wer import normalise_casing_and_punctuation

log = logging.getLogger(__name__)

# Share of training label tokens above which unknown tokens are warned about (any count
# is an error with strict_text).
UNKNOWN_TOKEN_WARN_SHARE = 0.001
EXAMPLES = 5


class TextError(ValueError):
    """Training labels hold tokens the tokenizer cannot represent, and strict_text is set."""


@dataclass
class SetView:
    """What the report needs of one set: its utterances, their durations and where they came
    from. ``skipped`` counts the rows a run leaves out, ``bad_rows`` those it refuses
    (on_bad_row "error"), each by reason; ``problems`` lists every bad row."""

    name: str
    spec: str
    layout: str
    columns: dict[str, str | None]
    utterances: Sequence[Utterance]
    seconds: Sequence[float]
    skipped: dict[str, int]
    problems: Sequence[RowProblem] = ()
    bad_rows: dict[str, int] = field(default_factory=dict)


def label_text(config) -> Callable[[str], str]:
    """The text a training transcript is tokenised from: itself, or normalised (text_normalize)."""
    return normalise_casing_and_punctuation if config.text_normalize else (lambda text: text)


# --------------------------------------------------------------------------- building


def report_from_sets(train_set, eval_sets: Sequence, tokenizer, config, sampling_rate: int) -> dict[str, Any]:
    """The report of a run's prepared sets (``trainable.data.UtteranceSet``), whose decoded
    audio is at ``sampling_rate``."""
    views = [SetView(s.name, s.manifest, s.layout, s.columns, s.utterances, [len(a) / sampling_rate for a in s.audio],
                     dict(s.skipped)) for s in [train_set, *eval_sets]]
    return build_report(views[0], views[1:], tokenizer, config, durations_from="decoded audio")


def report_from_config(config, tokenizer=None, views: Sequence[SetView] | None = None) -> dict[str, Any]:
    """The report without decoding (``undecoded_views``, read here unless given). Rows a
    run would refuse are counted by reason as bad rows; ``check_rows`` lists them."""
    if tokenizer is None:
        tokenizer = load_tokenizer(config.model)
    views = views or undecoded_views(config)
    return build_report(views[0], list(views[1:]), tokenizer, config, durations_from="audio headers")


def undecoded_views(config, hub: bool = True) -> list[SetView]:
    """Training set first, then each eval set: rows read from each source, durations from the
    audio files' headers (soundfile.info), ``max_duration`` and ``on_bad_row`` applied as a
    run applies them. ``hub=False`` leaves out datasets on a hub, which only a download could read."""
    sets = [("train", config.train_manifest), *config.eval_manifests]
    return [_undecoded_view(name, spec, config.max_duration, config.on_bad_row) for name, spec in sets if hub or not is_hub_spec(spec)]


def check_rows(views: Sequence[SetView], on_bad_row: str, skip_hint: str) -> None:
    """Refuse, as a run would before its first step, a set with bad rows (``on_bad_row``
    "error": every one listed as ``file:line: what``) or with none usable. What only a
    decode shows (a duration field the audio contradicts, audio too long for the model) is
    left to the run."""
    from trainable.data import bad_rows_error

    for view in views:
        if view.problems and on_bad_row == "error":
            raise bad_rows_error(view.spec, view.problems, skip_hint)
        if not view.utterances:
            raise ManifestError(f"{view.spec}: no usable utterances (skipped: {view.skipped or 'none'})")


def load_tokenizer(model: str):
    """The model's tokenizer, as a run loads it (with its processor), without the weights."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model).tokenizer


def _undecoded_view(name: str, spec: str, max_duration: float | None, on_bad_row: str) -> SetView:
    from trainable.data import duration_field_problem

    source = read_source(spec)
    problems = list(source.problems)
    skipped = Counter()
    kept, seconds = [], []
    for utterance in source.utterances:
        problem = duration_field_problem(utterance)
        try:
            length = header_seconds(utterance.audio_path, utterance.audio_bytes)
        except AudioError as error:
            problem = problem or RowProblem(utterance.source, error.reason, str(error))
        if problem is not None:
            problems.append(problem)
        elif max_duration is not None and length > max_duration:
            skipped["longer than max_duration"] += 1
        else:
            kept.append(utterance)
            seconds.append(length)
    bad = Counter(problem.reason for problem in problems)
    if on_bad_row == "skip":
        skipped.update(bad)
        bad = Counter()
    return SetView(name, spec, source.layout, source.columns, kept, seconds, dict(skipped), problems, dict(bad))


def build_report(train: SetView, evals: list[SetView], tokenizer, config, durations_from: str) -> dict[str, Any]:
    return {
        "durations_from": durations_from,
        "sets": {view.name: set_facts(view) for view in [train, *evals]},
        "shared_speakers": {view.name: shared_speakers(train.utterances, view.utterances) for view in evals},
        "unknown_tokens": unknown_tokens(train.utterances, tokenizer, label_text(config)),
        "text_normalize": bool(config.text_normalize),
    }


def set_facts(view: SetView) -> dict[str, Any]:
    seconds = sorted(view.seconds)
    speakers = {u.speaker for u in view.utterances if u.speaker}
    return {
        "source": view.spec,
        "layout": view.layout,
        "columns": view.columns,
        "utterances": len(view.utterances),
        "hours": sum(seconds) / 3600,
        "speakers": len(speakers),
        "seconds_min": seconds[0] if seconds else None,
        "seconds_median": statistics.median(seconds) if seconds else None,
        "seconds_max": seconds[-1] if seconds else None,
        "characters": "".join(sorted({c for u in view.utterances for c in u.text})),
        "skipped": view.skipped,
        "bad_rows": view.bad_rows,
    }


def shared_speakers(train: Sequence[Utterance], evaluation: Sequence[Utterance]) -> dict[str, Any]:
    """Speakers of an eval set also heard in training, and how many of its utterances they say."""
    train_speakers = {u.speaker for u in train if u.speaker}
    eval_speakers = {u.speaker for u in evaluation if u.speaker}
    shared = sorted(train_speakers & eval_speakers)
    return {
        "count": len(shared),
        "of": len(eval_speakers),
        "utterances": sum(1 for u in evaluation if u.speaker in train_speakers),
        "examples": shared[:EXAMPLES],
    }


def unknown_tokens(train: Sequence[Utterance], tokenizer, to_label: Callable[[str], str]) -> dict[str, Any]:
    """Label tokens the tokenizer maps to its unknown token: how many, in which utterances,
    and which characters cause them (each character of those labels tokenised alone)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    report: dict[str, Any] = {"tokenizer_unknown_token": getattr(tokenizer, "unk_token", None), "count": 0,
                              "label_tokens": 0, "share": 0.0, "utterances": 0, "examples": [], "characters": ""}
    affected_chars: set[str] = set()
    for utterance in train:
        label = to_label(utterance.text)
        ids = list(tokenizer(label).input_ids)
        report["label_tokens"] += len(ids)
        unknown = sum(1 for i in ids if unk is not None and i == unk)
        if unknown:
            report["count"] += unknown
            report["utterances"] += 1
            affected_chars.update(label)
            if len(report["examples"]) < EXAMPLES:
                report["examples"].append({"id": utterance.id, "source": utterance.source, "label": label, "unknown": unknown})
    report["share"] = report["count"] / report["label_tokens"] if report["label_tokens"] else 0.0
    report["characters"] = "".join(sorted(c for c in affected_chars if _is_unknown(tokenizer, c, unk)))
    return report


def _is_unknown(tokenizer, char: str, unk: int | None) -> bool:
    return unk is not None and unk in tokenizer(char, add_special_tokens=False).input_ids


# --------------------------------------------------------------------------- acting on it


def check_labels(report: dict[str, Any], strict: bool) -> str | None:
    """Raise TextError (strict) or return a warning when training labels hold unknown tokens;
    None when there is nothing to say. Strict refuses any; the warning needs more than
    UNKNOWN_TOKEN_WARN_SHARE of the label tokens."""
    unknown = report["unknown_tokens"]
    if not unknown["count"] or (not strict and unknown["share"] <= UNKNOWN_TOKEN_WARN_SHARE):
        return None
    example = unknown["examples"][0]
    message = (
        f"{unknown['count']} of {unknown['label_tokens']} training label tokens ({unknown['share']:.1%}, in "
        f"{unknown['utterances']} utterances) are the tokenizer's unknown token {unknown['tokenizer_unknown_token']!r}, "
        f"from the characters {unknown['characters']!r}; e.g. {example['source']}: {example['label']!r}. "
        "The model would learn to emit it."
    )
    if strict:
        raise TextError(message + " Fix the transcripts, or pass --text-normalize if the characters are casing or punctuation.")
    if report.get("text_normalize"):
        return message + " Fix the transcripts, or pass --strict-text to refuse them."
    return message + " Pass --text-normalize to lower-case and drop punctuation as the eval normaliser does, or --strict-text to refuse them."


def format_report(report: dict[str, Any]) -> str:
    """The report as a person reads it: a table of sets, then what is worth a look."""
    lines = [f"Data report (durations from {report['durations_from']}):",
             f"  {'set':<12}{'utts':>7}{'hours':>8}{'speakers':>10}{'min s':>8}{'median s':>10}{'max s':>8}   layout"]
    for name, facts in report["sets"].items():
        lines.append(
            f"  {name:<12}{facts['utterances']:>7}{facts['hours']:>8.3g}{facts['speakers']:>10}"
            f"{_seconds(facts['seconds_min']):>8}{_seconds(facts['seconds_median']):>10}{_seconds(facts['seconds_max']):>8}"
            f"   {facts['layout']}{_columns(facts['columns'])}"
        )
    for name, facts in report["sets"].items():
        lines.append(f"  {name} characters: {facts['characters']!r}")
        if facts["skipped"]:
            lines.append(f"  {name} skipped: {_counts(facts['skipped'])}")
        if facts.get("bad_rows"):  # absent from a report written before bad rows were told apart
            lines.append(f"  {name} bad rows: {_counts(facts['bad_rows'])} (on_bad_row=error refuses them)")
    for name, shared in report["shared_speakers"].items():
        if shared["count"]:
            lines.append(f"  speakers shared by train and {name}: {shared['count']} of {shared['of']} "
                         f"({shared['utterances']} {name} utterances), e.g. {', '.join(shared['examples'])}")
        else:
            lines.append(f"  speakers shared by train and {name}: none")
    unknown = report["unknown_tokens"]
    labels = "normalised training labels" if report["text_normalize"] else "training labels"
    if unknown["count"]:
        lines.append(f"  unknown tokens in {labels}: {unknown['count']} of {unknown['label_tokens']} ({unknown['share']:.2%}) "
                     f"in {unknown['utterances']} utterances, from characters {unknown['characters']!r}")
        lines += [f"    {e['source']}: {e['label']!r} ({e['unknown']} unknown)" for e in unknown["examples"][:3]]
    else:
        lines.append(f"  unknown tokens in {labels}: none")
    return "\n".join(lines)


def _counts(by_reason: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in by_reason.items())


def _seconds(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _columns(columns: dict[str, str | None]) -> str:
    named = [f"{role}={column}" for role, column in columns.items() if column]
    return f" ({', '.join(named)})" if named else ""
