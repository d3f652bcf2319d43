"""WER against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from trainable.wer import corpus_wer, normalise, score_corpus, score_utterance


def test_substitution_deletion_insertion_counts():
    score = score_utterance("the cat sat on the mat", "the cat sit on mat")
    assert (score.ref_words, score.substitutions, score.deletions, score.insertions) == (6, 1, 1, 0)
    assert score_utterance("a b", "a b c d").insertions == 2


def test_corpus_wer_is_total_errors_over_total_words_not_a_mean():
    # utterance 1: 1 error in 1 word (WER 1.0); utterance 2: 0 errors in 9 words.
    corpus, _ = score_corpus(["yes", "alpha beta gamma delta epsilon zeta eta theta iota"],
                             ["no", "alpha beta gamma delta epsilon zeta eta theta iota"])
    assert corpus["wer"] == pytest.approx(1 / 10)  # a mean of per-utterance WERs would say 0.5
    assert corpus["errors"] == 1 and corpus["ref_words"] == 10


def test_normalised_and_orthographic_views_differ_on_formatting():
    corpus, _ = score_corpus(["CONCORD RETURNED TO ITS PLACE"], ["Concord returned to its place."])
    assert corpus["wer"] == 0.0
    # lower-casing alone leaves "place." != "place"
    assert corpus["orthographic_wer"] == pytest.approx(1 / 5)
    assert normalise("Mr. Smith, colour!") == "mister smith color"


def test_empty_reference_is_dropped_and_counted():
    corpus = corpus_wer([score_utterance("", "noise"), score_utterance("hello world", "hello")])
    assert corpus["dropped_empty_reference"] == 1
    assert corpus["num_utterances"] == 1
    assert corpus["wer"] == pytest.approx(0.5)


def test_empty_hypothesis_is_all_deletions():
    score = score_utterance("three words here", "")
    assert score.deletions == 3 and score.errors == 3


def test_no_words_at_all_gives_nan_not_zero():
    assert math.isnan(corpus_wer([])["wer"])


def test_cer_counts_character_edits_on_the_normalised_text_spaces_included():
    score = score_utterance("The cat.", "the bat")  # normalised "the cat" vs "the bat": 1 edit in 7 characters
    assert (score.ref_chars, score.char_errors) == (7, 1)
    corpus, _ = score_corpus(["The cat.", "dog"], ["the bat", "dogs"])
    assert corpus["cer"] == pytest.approx(2 / 10) and corpus["char_errors"] == 2 and corpus["ref_chars"] == 10
    assert score_utterance("", "noise").ref_chars == 0  # dropped with the empty reference, like its words
