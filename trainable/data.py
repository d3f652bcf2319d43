"""Turn manifests and datasets into checked, decoded, tokenised utterance sets, and batch them.

Everything that can be wrong with the data is found here, before the first training
step: a bad row at step 900 of 1600 wastes the 899 before it. Audio is decoded once and
kept in memory, so no epoch or evaluation decodes a file twice.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from trainable.audio import AudioError, content_hash, load_audio
from trainable.manifest import ManifestError, RowProblem, Utterance
from trainable.sources import read_source

log = logging.getLogger(__name__)

# How far a manifest's ``duration`` may be from the decoded length: rounding to 0.1 s,
# codec padding and resampling stay well inside it (the bundled demo: 0.05 ms at most);
# a truncated file or a row pointing at the wrong recording does not.
DURATION_TOLERANCE_SECONDS = 0.1
DURATION_TOLERANCE_SHARE = 0.01


@dataclass(frozen=True)
class ModelLimits:
    """What the model can take: audio seconds (None: no fixed window) and label tokens."""

    sampling_rate: int
    max_audio_seconds: float | None
    max_label_tokens: int | None


@dataclass
class UtteranceSet:
    """One manifest or dataset, ready to use: utterances with their decoded audio (and labels
    for training). ``manifest`` is its data spec, ``manifest_sha256`` that of the manifest
    file or of the dataset's rows (``trainable.sources``)."""

    name: str
    manifest: str
    manifest_sha256: str
    utterances: list[Utterance]
    audio: list[np.ndarray]
    audio_hashes: list[str]
    labels: list[list[int]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    layout: str = "manifest"  # or save_to_disk, parquet, audiofolder, common_voice, hub
    columns: dict[str, str | None] = field(default_factory=dict)  # role -> dataset column used

    def __len__(self) -> int:
        return len(self.utterances)


def model_limits(model, processor) -> ModelLimits:
    """Whisper-style extractors have a fixed window (``n_samples``); Moonshine takes any length."""
    extractor = processor.feature_extractor
    rate = int(extractor.sampling_rate)
    n_samples = getattr(extractor, "n_samples", None)
    config = model.config
    max_tokens = getattr(config, "max_target_positions", None) or getattr(config, "max_position_embeddings", None)
    return ModelLimits(rate, n_samples / rate if n_samples else None, int(max_tokens) if max_tokens else None)


def label_ids(tokenizer, text: str, decoder_start_token_id: int | None, eos_token_id: int | None) -> list[int]:
    """Token ids the decoder must produce: no start token (the model prepends it), one EOS."""
    ids = list(tokenizer(text).input_ids)
    if ids and decoder_start_token_id is not None and ids[0] == decoder_start_token_id:
        ids = ids[1:]
    if eos_token_id is not None and (not ids or ids[-1] != eos_token_id):
        ids.append(eos_token_id)
    return ids


def prepare_set(
    name: str,
    manifest: str,
    limits: ModelLimits,
    *,
    max_duration: float | None = None,
    on_bad_row: str = "error",
    tokenize=None,
) -> UtteranceSet:
    """Read, check, decode and (with ``tokenize``) label every row of a manifest or dataset.

    With ``on_bad_row="error"`` every problem in the file is listed in one ManifestError;
    with ``"skip"`` bad rows are dropped and counted by reason in a warning.
    """
    source = read_source(manifest)
    utterances, problems = source.utterances, source.problems
    kept = UtteranceSet(name, str(manifest), source.sha256, [], [], [], layout=source.layout, columns=source.columns)
    filtered = 0
    for utterance in utterances:
        problem = duration_field_problem(utterance)
        if problem:
            problems.append(problem)
            continue
        try:
            audio = load_audio(utterance.audio_path, limits.sampling_rate, utterance.audio_bytes)
        except AudioError as error:
            problems.append(RowProblem(utterance.source, error.reason, str(error)))
            continue
        seconds = len(audio) / limits.sampling_rate
        problem = _duration_mismatch(utterance, seconds)
        if problem:
            problems.append(problem)
            continue
        if max_duration is not None and seconds > max_duration:  # the decoded length, not the manifest's claim
            filtered += 1
            continue
        problem = _length_problem(utterance, seconds, limits)
        labels = tokenize(utterance.text) if tokenize else None
        if problem is None and labels is not None and limits.max_label_tokens and len(labels) + 1 > limits.max_label_tokens:
            problem = RowProblem(
                utterance.source, "transcript too long",
                f"transcript is {len(labels)} tokens; the decoder takes at most {limits.max_label_tokens - 1}",
            )
        if problem:
            problems.append(problem)
            continue
        kept.utterances.append(dataclasses.replace(utterance, audio_bytes=None))  # the set keeps the decoded samples, not the encoded bytes
        kept.audio.append(audio)
        kept.audio_hashes.append(content_hash(audio))
        if labels is not None:
            kept.labels.append(labels)
    _handle_problems(kept, problems, on_bad_row)
    if filtered:
        kept.skipped["longer than max_duration"] = filtered
        log.info("%s: kept %d utterances, dropped %d longer than %.1f s", manifest, len(kept), filtered, max_duration)
    if not kept.utterances:
        raise ManifestError(f"{manifest}: no usable utterances (skipped: {kept.skipped or 'none'})")
    return kept


def duration_field_problem(utterance: Utterance) -> RowProblem | None:
    """A ``duration`` the manifest gives must be a length: finite and positive."""
    duration = utterance.duration
    if duration is None or (math.isfinite(duration) and duration > 0):
        return None
    return RowProblem(utterance.source, "bad duration", f"duration {duration!r} is not a positive number of seconds")


def _duration_mismatch(utterance: Utterance, seconds: float) -> RowProblem | None:
    """The decoded audio must be as long as the manifest says: a file that decodes shorter
    was cut (or the row names the wrong file), and its transcript describes audio it lacks."""
    if utterance.duration is None:
        return None
    tolerance = max(DURATION_TOLERANCE_SECONDS, DURATION_TOLERANCE_SHARE * utterance.duration)
    if abs(seconds - utterance.duration) <= tolerance:
        return None
    return RowProblem(
        utterance.source, "duration mismatch",
        f"duration says {utterance.duration:g} s but the audio decodes to {seconds:.3f} s ({utterance.audio_path}); "
        "a truncated file, the wrong file, or a wrong duration field",
    )


def _length_problem(utterance: Utterance, seconds: float, limits: ModelLimits) -> RowProblem | None:
    if limits.max_audio_seconds and seconds > limits.max_audio_seconds:
        return RowProblem(
            utterance.source, "audio too long",
            f"audio is {seconds:.1f} s; the model takes at most {limits.max_audio_seconds:.0f} s "
            f"({utterance.audio_path}); use --max-duration to drop such rows",
        )
    if seconds < 0.1:
        return RowProblem(utterance.source, "audio too short", f"audio is {seconds * 1000:.0f} ms ({utterance.audio_path})")
    return None


def _handle_problems(kept: UtteranceSet, problems: list[RowProblem], on_bad_row: str) -> None:
    if not problems:
        return
    if on_bad_row == "error":
        raise bad_rows_error(kept.manifest, problems, "pass --on-bad-row skip")
    counts = Counter(p.reason for p in problems)
    kept.skipped.update(counts)
    log.warning(
        "%s: skipped %d bad row(s): %s (first: %s)",
        kept.manifest, len(problems), ", ".join(f"{n} {r}" for r, n in counts.items()), problems[0],
    )


def bad_rows_error(manifest: str, problems: Sequence[RowProblem], skip_hint: str) -> ManifestError:
    """Every bad row of one manifest, in file order, as ``file:line: what is wrong`` (the first
    20, then a count); ``skip_hint`` says how this command drops them instead."""
    ordered = sorted(problems, key=_row_order)
    shown = "\n  ".join(str(p) for p in ordered[:20])
    more = f"\n  ... and {len(ordered) - 20} more" if len(ordered) > 20 else ""
    return ManifestError(f"{manifest}: {len(ordered)} bad row(s); fix them or {skip_hint}:\n  {shown}{more}")


def _row_order(problem: RowProblem) -> tuple[str, int]:
    """``train.jsonl:12`` or ``/data/ds:train[11]`` sorts by its file, then its row number."""
    where, _, number = problem.source.rstrip("]").replace("[", ":").rpartition(":")
    return (where, int(number)) if number.isdigit() else (problem.source, 0)


class LeakageError(ValueError):
    """Eval utterances also appear in training: their WER would not measure generalisation."""


def find_overlap(train: UtteranceSet, evaluation: UtteranceSet) -> list[str]:
    """Eval utterance ids whose audio is in training (same resolved path or same samples)."""
    train_paths = {u.audio_path for u in train.utterances}
    train_hashes = set(train.audio_hashes)
    return [
        u.id
        for u, digest in zip(evaluation.utterances, evaluation.audio_hashes)
        if u.audio_path in train_paths or digest in train_hashes
    ]


def check_overlap(train: UtteranceSet, eval_sets: Sequence[UtteranceSet], allow: bool) -> dict[str, dict]:
    """Refuse contaminated eval sets unless allowed; always return the overlap for the reports."""
    overlap = {}
    for evaluation in eval_sets:
        ids = find_overlap(train, evaluation)
        overlap[evaluation.name] = {"count": len(ids), "of": len(evaluation), "ids": ids[:50]}
        if not ids:
            continue
        message = (
            f"LEAKAGE: {len(ids)} of {len(evaluation)} utterances of eval set '{evaluation.name}' "
            f"({evaluation.manifest}) are also in the training manifest {train.manifest} "
            f"(same audio file or same audio content), e.g. {', '.join(ids[:5])}. "
            "Their WER would measure memorisation, not generalisation."
        )
        if not allow:
            raise LeakageError(message + " Remove them, or pass --allow-overlap to proceed anyway.")
        log.warning("%s Proceeding because --allow-overlap was given; the reports record the overlap.", message)
    return overlap


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator, bucket_batches: int = 50) -> list[list[int]]:
    """Batches of similar-length utterances, in random order.

    Shuffle, cut into buckets of ``bucket_batches`` batches, sort each bucket by length and
    cut it into batches, then shuffle the batches: little padding, yet every epoch differs
    and the order depends only on the seed.
    """
    order = rng.permutation(len(lengths))
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: lengths[i])
        batches.extend([int(i) for i in chunk[j : j + batch_size]] for j in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def training_batches(lengths: Sequence[int], batch_size: int, seed: int, start_epoch: int = 0) -> Iterator[tuple[int, int, list[int]]]:
    """Endless (epoch, index in epoch, batch) stream; epoch e is shuffled by (seed, e) alone,
    so a resumed run can skip to where it stopped and see the same batches."""
    epoch = start_epoch
    while True:
        rng = np.random.default_rng([seed, epoch])
        for index, batch in enumerate(length_bucketed_batches(lengths, batch_size, rng)):
            yield epoch, index, batch
        epoch += 1


def audio_inputs(processor, audio: Sequence[np.ndarray], limits: ModelLimits, input_name: str) -> dict:
    """Feature-extract a batch. Fixed-window extractors (Whisper) pad to their window;
    the others pad to the longest utterance of the batch only."""
    extractor = processor.feature_extractor
    kwargs = {"sampling_rate": limits.sampling_rate, "return_tensors": "pt", "return_attention_mask": True}
    if limits.max_audio_seconds is None:
        kwargs["padding"] = "longest"
    features = extractor(list(audio), **kwargs)
    inputs = {input_name: features[input_name]}
    if "attention_mask" in features and input_name == "input_values":
        inputs["attention_mask"] = features["attention_mask"]
    return inputs
