"""What the errors on an eval set are: confusion pairs, words fixed and broken, WER per speaker.

Everything is counted on Whisper-normalised text with jiwer's word alignment, the same text
and alignment the WER is computed from, so the substitutions here add up to the WER report's.
Used by ``trainable.run``'s reports and by repro's report (pooled over seeds).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from trainable.wer import normalise

TOP = 10


@dataclass(frozen=True)
class WordAlignment:
    """One utterance's normalised reference words, which of them the hypothesis got right, and
    its substitutions as (reference word, hypothesis word) pairs."""

    reference: tuple[str, ...]
    hits: tuple[bool, ...]
    substitutions: tuple[tuple[str, str], ...]


@lru_cache(maxsize=1 << 16)
def align_words(reference: str, hypothesis: str) -> WordAlignment:
    """jiwer's alignment of the normalised texts. Cached: repro aligns the same baseline
    hypothesis once per seed."""
    import jiwer

    reference, hypothesis = normalise(reference), normalise(hypothesis)
    if not reference:
        return WordAlignment((), (), ())
    out = jiwer.process_words(reference, hypothesis)
    ref, hyp = out.references[0], out.hypotheses[0]
    hits, substitutions = [False] * len(ref), []
    for chunk in out.alignments[0]:
        if chunk.type == "equal":
            hits[chunk.ref_start_idx : chunk.ref_end_idx] = [True] * (chunk.ref_end_idx - chunk.ref_start_idx)
        elif chunk.type == "substitute":
            substitutions += zip(ref[chunk.ref_start_idx : chunk.ref_end_idx], hyp[chunk.hyp_start_idx : chunk.hyp_end_idx])
    return WordAlignment(tuple(ref), tuple(hits), tuple(substitutions))


def confusion_pairs(pairs: Iterable[tuple[str, str]], top: int = TOP) -> list[dict[str, Any]]:
    """The most frequent substitutions over (reference, hypothesis) pairs, most frequent first."""
    counts = Counter(pair for reference, hypothesis in pairs for pair in align_words(reference, hypothesis).substitutions)
    return [{"reference": ref, "hypothesis": hyp, "count": n} for (ref, hyp), n in _most_common(counts, top)]


def words_fixed_and_broken(triples: Iterable[tuple[str, str, str]], top: int = TOP) -> dict[str, list[dict[str, Any]]]:
    """Reference words the adapter fixed (wrong in the baseline, right when tuned) and broke
    (right, then wrong), counted over (reference, baseline, tuned) triples."""
    fixed, broken = Counter(), Counter()
    for reference, baseline, tuned in triples:
        before, after = align_words(reference, baseline), align_words(reference, tuned)
        for word, was_right, is_right in zip(before.reference, before.hits, after.hits):
            if is_right and not was_right:
                fixed[word] += 1
            elif was_right and not is_right:
                broken[word] += 1
    return {
        "words_fixed": [{"word": word, "count": n} for word, n in _most_common(fixed, top)],
        "words_broken": [{"word": word, "count": n} for word, n in _most_common(broken, top)],
    }


def _most_common(counts: Counter, top: int) -> list[tuple[Any, int]]:
    """Highest count first, ties in alphabetical order, so reports are byte-stable."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


def speaker_wers(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Corpus WER per speaker from report rows (``id``, ``speaker``, ``ref_words``, ``errors``);
    rows of several seeds pool their errors into the WER, while ``utterances`` and
    ``ref_words`` count each utterance once. Empty references are left out, as in the
    corpus WER; an unknown speaker is ``""``."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["ref_words"] <= 0:
            continue
        entry = found.setdefault(str(row.get("speaker") or ""), {"words": {}, "scored_words": 0, "errors": 0})
        entry["words"][row["id"]] = int(row["ref_words"])
        entry["scored_words"] += int(row["ref_words"])
        entry["errors"] += int(row["errors"])
    return {
        speaker: {"utterances": len(e["words"]), "ref_words": sum(e["words"].values()), "errors": e["errors"],
                  "wer": e["errors"] / e["scored_words"]}
        for speaker, e in sorted(found.items())
    }


def speaker_changes(baseline_rows: Iterable[Mapping[str, Any]], tuned_rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per speaker: baseline WER, tuned WER and the change (tuned - baseline; negative is
    better), in speaker order."""
    baseline, tuned = speaker_wers(baseline_rows), speaker_wers(tuned_rows)
    return [
        {"speaker": speaker, "utterances": tuned[speaker]["utterances"], "ref_words": tuned[speaker]["ref_words"],
         "baseline_wer": baseline[speaker]["wer"], "tuned_wer": tuned[speaker]["wer"],
         "change": tuned[speaker]["wer"] - baseline[speaker]["wer"]}
        for speaker in tuned if speaker in baseline
    ]


def speakers_to_show(changes: Sequence[dict[str, Any]], limit: int = 12) -> list[dict[str, Any]]:
    """All speakers when there are few; else the ``limit // 2`` most improved and the
    ``limit // 2`` most worsened, since those are the ones a reader acts on."""
    if len(changes) <= limit:
        return list(changes)
    ordered = sorted(changes, key=lambda row: (row["change"], row["speaker"]))
    return ordered[: limit // 2] + ordered[-(limit // 2) :]


def compare_systems(baseline: Mapping[str, Any], tuned: Mapping[str, Any], top: int = TOP) -> dict[str, Any]:
    """What the adapter changed on one eval set, from its baseline and tuned reports (rows
    in the same order): words fixed and broken, and WER per speaker before and after."""
    triples = ((b["reference"], b["hypothesis"], t["hypothesis"]) for b, t in zip(baseline["utterances"], tuned["utterances"]))
    return {**words_fixed_and_broken(triples, top), "speakers": speaker_changes(baseline["utterances"], tuned["utterances"])}
