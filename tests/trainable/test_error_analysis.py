"""Error analysis and NIST trn export against hand-worked cases, and sclite against our totals."""

from __future__ import annotations

import pytest

from trainable.error_analysis import (
    align_words, compare_systems, confusion_pairs, speaker_changes, speakers_to_show, words_fixed_and_broken,
)
from trainable.trn import trn_id, trn_lines, write_eval_set_trn
from trainable.wer import score_as_dict, score_corpus


def test_alignment_on_normalised_words_marks_hits_and_substitutions():
    aligned = align_words("The cat sat on the mat.", "the bat sat on mat")
    assert aligned.reference == ("the", "cat", "sat", "on", "the", "mat")
    assert aligned.hits == (True, False, True, True, False, True)  # "cat" substituted, the second "the" deleted
    assert aligned.substitutions == (("cat", "bat"),)
    empty = align_words("", "anything")  # no reference words: nothing to align
    assert (empty.reference, empty.hits, empty.substitutions) == ((), (), ())


def test_confusion_pairs_are_counted_over_the_set_most_frequent_first():
    pairs = confusion_pairs([("red dog", "bed dog"), ("a red cat", "a bed hat"), ("blue", "glue")])
    assert pairs == [{"reference": "red", "hypothesis": "bed", "count": 2},
                     {"reference": "blue", "hypothesis": "glue", "count": 1},
                     {"reference": "cat", "hypothesis": "hat", "count": 1}]
    assert confusion_pairs([("a b c", "x y z")], top=2) == [{"reference": "a", "hypothesis": "x", "count": 1},
                                                            {"reference": "b", "hypothesis": "y", "count": 1}]


def test_words_fixed_and_broken_compare_the_two_alignments_word_by_word():
    result = words_fixed_and_broken([
        ("red dog runs", "bed dog runs", "red dog runs"),   # red fixed
        ("red cat", "bed cat", "red hat"),                  # red fixed, cat broken
        ("cat", "cat", ""),                                 # cat broken (deleted)
    ])
    assert result == {"words_fixed": [{"word": "red", "count": 2}], "words_broken": [{"word": "cat", "count": 2}]}


def test_speaker_changes_pool_errors_over_words_and_keep_unknown_speakers():
    baseline = [{"id": "a", "speaker": "s1", "ref_words": 4, "errors": 2}, {"id": "b", "speaker": "s1", "ref_words": 6, "errors": 0},
                {"id": "c", "speaker": None, "ref_words": 5, "errors": 1}, {"id": "d", "speaker": "s2", "ref_words": 0, "errors": 3}]
    tuned = [dict(row, errors=e) for row, e in zip(baseline, [0, 1, 1, 0])]
    rows = speaker_changes(baseline, tuned)
    assert [r["speaker"] for r in rows] == ["", "s1"]  # s2 has no reference words: left out like the corpus WER leaves it
    assert rows[1] == {"speaker": "s1", "utterances": 2, "ref_words": 10, "baseline_wer": 0.2, "tuned_wer": 0.1,
                       "change": pytest.approx(-0.1)}


def test_speaker_changes_over_seeds_pool_the_wer_but_count_each_utterance_once():
    """Repro pools 3 seeds' rows: the WER pools their errors, the table's counts stay one eval set's."""
    one_seed = [{"id": "a", "speaker": "s1", "ref_words": 4}, {"id": "b", "speaker": "s1", "ref_words": 6}]
    baseline = [dict(row, seed=seed, errors=1) for seed in range(3) for row in one_seed]
    tuned = [dict(row, errors=seed) for row, seed in zip(baseline, [0, 0, 1, 1, 2, 2])]
    (row,) = speaker_changes(baseline, tuned)
    assert (row["utterances"], row["ref_words"]) == (2, 10)
    assert row["baseline_wer"] == pytest.approx(6 / 30) and row["tuned_wer"] == pytest.approx(6 / 30)


def test_many_speakers_show_the_largest_changes_both_ways():
    rows = [{"speaker": f"s{i:02d}", "change": (i - 10) / 100} for i in range(20)]
    shown = [r["speaker"] for r in speakers_to_show(rows, limit=4)]
    assert shown == ["s00", "s01", "s18", "s19"]
    assert speakers_to_show(rows[:3], limit=4) == rows[:3]


def report(references: list[str], hypotheses: list[str], speakers: list[str | None], ids: list[str]) -> dict:
    """A WER report's utterance rows, scored by the project's own scorer."""
    _, scores = score_corpus(references, hypotheses)
    rows = [{"id": i, "speaker": s, "reference": r, "hypothesis": h, **score_as_dict(score)}
            for i, s, r, h, score in zip(ids, speakers, references, hypotheses, scores)]
    return {"utterances": rows, **score_corpus(references, hypotheses)[0]}


def test_compare_systems_reads_two_reports():
    args = (["red dog", "a cat"], ["s-1", None], ["u1", "u2"])
    baseline, tuned = report(args[0], ["bed dog", "a cat"], *args[1:]), report(args[0], ["red dog", "a hat"], *args[1:])
    compared = compare_systems(baseline, tuned)
    assert compared["words_fixed"] == [{"word": "red", "count": 1}] and compared["words_broken"] == [{"word": "cat", "count": 1}]
    assert [(r["speaker"], r["change"]) for r in compared["speakers"]] == [("", 0.5), ("s-1", -0.5)]


def test_trn_ids_are_sclites_speaker_utterance_form():
    assert trn_id("en-us+norbert", "heldout-00001") == "en_us+norbert-heldout-00001"
    assert trn_id(None, "u 1 (x)") == "unknown-u_1__x_"
    rows = [{"id": "u1", "speaker": "a", "reference": "Hello, World!", "hypothesis": "hello word", "ref_words": 2},
            {"id": "u2", "speaker": "a", "reference": "", "hypothesis": "noise", "ref_words": 0}]
    assert trn_lines(rows, "reference", "x.trn") == "hello world (a-u1)\n"  # empty reference left out, as in the WER
    assert trn_lines(rows, "hypothesis", "x.trn") == "hello word (a-u1)\n"
    with pytest.raises(ValueError, match="x.trn: utterances 'u 1' and 'u_1' get the same trn id"):
        trn_lines([{**rows[0], "id": "u 1"}, {**rows[0], "id": "u_1"}], "reference", "x.trn")


# Normalisation at work (numbers, spelling, punctuation, case), a speaker with "-", an unknown
# speaker, an empty reference, an empty hypothesis, insertions, and a non-ASCII name.
REFERENCES = ["Mr. Smith paid $5 on Thursday!", "the colour of the sea", "", "go north", "Zoë met ten people at 3 pm.", "a b c"]
HYPOTHESES = ["mister smith paid five dollars thursday", "the color of a see sea", "uh", "", "zoe met 10 people at three", "a b c d e"]
SPEAKERS = ["en-us+norbert", "en-us+norbert", "spk2", None, "spk2", "spk3"]


def test_sclite_on_the_export_gives_our_totals(tmp_path, sclite_totals):
    ids = [f"utt-{i}" for i in range(len(REFERENCES))]
    reports = {"baseline": report(REFERENCES, REFERENCES, SPEAKERS, ids), "tuned": report(REFERENCES, HYPOTHESES, SPEAKERS, ids)}
    paths = write_eval_set_trn(tmp_path, "heldout", reports)
    assert sorted(p.name for p in paths.values()) == ["heldout_baseline.trn", "heldout_reference.trn", "heldout_tuned.trn"]
    for system, scored in reports.items():
        # Totals, not the S/D/I split: sclite weighs a substitution 4 and an insertion or deletion 3,
        # so among equally short alignments it may pick another split than jiwer does.
        totals = sclite_totals(paths["reference"], paths[system])
        assert (totals["sentences"], totals["words"], totals["errors"]) == (scored["num_utterances"], scored["ref_words"], scored["errors"])
    assert reports["tuned"]["errors"] > 0 and reports["tuned"]["insertions"] > 0
