"""Word and character error rates as the field reports them, per utterance and for a corpus.

Two views side by side: WER after Whisper's English normaliser (what a gain should be
judged on) and an orthographic WER that only lower-cases. A LoRA that learns a corpus's
casing or punctuation looks like an accuracy gain under weak normalisation; the pair
shows which one happened. CER is taken on the same normalised text (spaces count as
characters, as in jiwer's ``cer``): it shows whether wrong words are near misses.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Iterable, Sequence


@lru_cache(maxsize=1)
def _normaliser():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@lru_cache(maxsize=1 << 16)
def normalise(text: str) -> str:
    """Whisper's English normaliser: spelling, numbers, punctuation, case. Cached: a report
    normalises each reference once per system and per seed."""
    return " ".join(_normaliser()(text).split())


def normalise_casing_and_punctuation(text: str) -> str:
    """The eval normaliser's casing and punctuation rules alone, for training labels
    (``--text-normalize``): lower case; bracketed and parenthesised annotations dropped;
    punctuation and symbols become spaces, except an apostrophe inside a word ("don't"),
    a decimal point and currency or percent signs attached to digits. Words, spellings,
    numbers and diacritics stay as spoken: the full normaliser would turn "don't" into
    "do not", which the audio does not say.
    """
    s = text.lower()
    s = re.sub(r"[<\[][^>\]]*[>\]]", "", s)  # [noise], <unk>
    s = re.sub(r"\(([^)]+?)\)", "", s)  # (laughs)
    s = re.sub(r"[\u2018\u2019\u02bc`]", "'", s)  # typographic apostrophes
    s = re.sub(r"\s+'", "'", s)
    s = re.sub(r"(\d),(\d)", r"\1\2", s)  # 1,000
    s = re.sub(r"\.([^0-9]|$)", r" \1", s)  # periods, not decimal points
    s = "".join(c if c in _KEPT_SYMBOLS or unicodedata.category(c)[0] not in "SP" else " " for c in s)
    s = re.sub(r"[.$\u00a2\u20ac\u00a3]([^0-9])", r" \1", s)  # currency signs not before a digit
    s = re.sub(r"([^0-9])%", r"\1 ", s)
    s = re.sub(r"(?<![^\W_])'|'(?![^\W_])", " ", s)  # apostrophes not between letters or digits
    return " ".join(s.split())


_KEPT_SYMBOLS = ".%$\u00a2\u20ac\u00a3'"


def orthographic(text: str) -> str:
    """Lower case only: punctuation and spelling still count as words."""
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class UtteranceScore:
    """Edit counts of one hypothesis against its reference, in both views."""

    ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    orthographic_ref_words: int
    orthographic_errors: int
    ref_chars: int
    char_errors: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def _edit_counts(reference: str, hypothesis: str) -> tuple[int, int, int, int]:
    """(ref words, S, D, I); jiwer refuses an empty reference, which we score by hand."""
    import jiwer

    ref_words = len(reference.split())
    if ref_words == 0:
        return 0, 0, 0, len(hypothesis.split())
    out = jiwer.process_words(reference, hypothesis)
    return ref_words, out.substitutions, out.deletions, out.insertions


def _char_counts(reference: str, hypothesis: str) -> tuple[int, int]:
    """(ref characters, character edits), spaces included as in jiwer's ``cer``."""
    import jiwer

    if not reference:
        return 0, len(hypothesis)
    out = jiwer.process_characters(reference, hypothesis)
    return len(reference), out.substitutions + out.deletions + out.insertions


def score_utterance(reference: str, hypothesis: str) -> UtteranceScore:
    reference_norm, hypothesis_norm = normalise(reference), normalise(hypothesis)
    ref_words, sub, dele, ins = _edit_counts(reference_norm, hypothesis_norm)
    ortho_words, o_sub, o_del, o_ins = _edit_counts(orthographic(reference), orthographic(hypothesis))
    return UtteranceScore(ref_words, sub, dele, ins, ortho_words, o_sub + o_del + o_ins, *_char_counts(reference_norm, hypothesis_norm))


def corpus_wer(scores: Iterable[UtteranceScore]) -> dict:
    """Total errors over total reference words (never a mean of per-utterance WERs).

    Utterances whose normalised reference is empty carry no words to get wrong; they are
    dropped from both sums and counted, as the significance notes require.
    """
    scores = list(scores)
    kept = [s for s in scores if s.ref_words > 0]
    totals = {
        key: sum(getattr(s, key) for s in kept)
        for key in ("ref_words", "substitutions", "deletions", "insertions", "orthographic_ref_words", "orthographic_errors",
                    "ref_chars", "char_errors")
    }
    errors = totals["substitutions"] + totals["deletions"] + totals["insertions"]
    return {
        "wer": errors / totals["ref_words"] if totals["ref_words"] else float("nan"),
        "orthographic_wer": (
            totals["orthographic_errors"] / totals["orthographic_ref_words"] if totals["orthographic_ref_words"] else float("nan")
        ),
        "cer": totals["char_errors"] / totals["ref_chars"] if totals["ref_chars"] else float("nan"),
        "errors": errors,
        **totals,
        "num_utterances": len(kept),
        "dropped_empty_reference": len(scores) - len(kept),
    }


def score_corpus(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[dict, list[UtteranceScore]]:
    """Corpus WER and the per-utterance scores behind it."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    scores = [score_utterance(r, h) for r, h in zip(references, hypotheses)]
    return corpus_wer(scores), scores


def score_as_dict(score: UtteranceScore) -> dict:
    return {**asdict(score), "errors": score.errors}
