"""The repro statistics on tables whose truth is known, and the bootstrap against a plain loop."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeps.repro import significance as sig
from sweeps.repro.report import budget_explanation

try:
    from scores_tables import noisy_table, shifted_table, table_from_errors
except ImportError:  # tests/sweeps imported as a package
    from tests.sweeps.scores_tables import noisy_table, shifted_table, table_from_errors


def analyse(table: pd.DataFrame, resamples: int = 2000, seed: int = 0, **kwargs) -> sig.Analysis:
    table = sig.validate_scores(table, "test table")
    return sig.analyse(sig.paired_scores(table, "heldout"), resamples=resamples, seed=seed, **kwargs)


# --------------------------------------------------------------------------- verdicts on known truth


def test_clear_gain_on_every_seed_is_a_stable_gain():
    result = analyse(shifted_table([0.5, 0.45, 0.55, 0.5, 0.48]))
    assert result.verdict == "stable gain"
    assert result.ci[0] > 0 and result.poi == 1.0
    assert result.mean_delta == pytest.approx(0.049, abs=0.005)  # about half the utterances fix one of 10 words
    assert not result.power.underpowered, result.power.reasons
    assert all(s.ci[0] > 0 and s.errors_added == 0 and s.errors_removed > 0 for s in result.seeds)


def test_symmetric_noise_is_no_significant_change():
    result = analyse(noisy_table())
    assert result.verdict == "no significant change"
    assert result.ci[0] < 0 < result.ci[1]
    assert 0.05 < result.poi < 0.95


def test_worse_on_every_seed_is_a_regression():
    result = analyse(shifted_table([-0.3, -0.35, -0.3, -0.25, -0.3]))
    assert result.verdict == "regression"
    assert result.ci[1] < 0 and result.poi == 0.0
    assert all(s.utterances_better == 0 and s.utterances_worse > 0 for s in result.seeds)


def test_seeds_that_significantly_disagree_are_unstable():
    result = analyse(shifted_table([0.5, 0.5, 0.5, -0.5, -0.5]))
    assert result.verdict == "unstable"
    assert any(s.ci[0] > 0 for s in result.seeds) and any(s.ci[1] < 0 for s in result.seeds)


def test_one_seed_against_a_significant_mean_is_unstable():
    """The pooled CI excludes 0, but one seed goes the other way (not significantly)."""
    table = shifted_table([0.5, 0.5, 0.5, 0.5, 0.0])
    last = (table["seed"] == 4) & (table["system"] == "tuned")
    moves = np.zeros(600, dtype=int)
    moves[:62], moves[100:160] = 1, -1  # 62 words broken, 60 fixed: net -2 of 6000
    table.loc[last, "errors"] += moves
    result = analyse(table)
    assert result.ci[0] > 0
    assert result.seeds[-1].delta < 0 and result.seeds[-1].ci[0] < 0 < result.seeds[-1].ci[1]
    assert result.verdict == "unstable"


def test_two_seeds_and_one_word_on_24_utterances_is_underpowered():
    """The notes' example: one word gained on ~24 utterances cannot be significant (POI ~0.6)."""
    rng = np.random.default_rng(3)
    ref_words = rng.integers(6, 14, size=24)
    baseline = rng.binomial(ref_words, 0.15)
    tuned = np.stack([baseline.copy(), baseline.copy()])
    tuned[:, 0] = np.maximum(baseline[0] - 1, 0) if baseline[0] else baseline[0]
    tuned[:, 5] += 1
    tuned[:, 7] = np.maximum(baseline[7] - 2, 0)  # net: one word better
    gained = int(baseline.sum() - tuned[0].sum())
    assert gained == 1
    result = analyse(table_from_errors(baseline, tuned, ref_words))
    assert result.verdict == "no significant change"
    assert result.power.underpowered
    assert "2 seeds < 5" in result.power.reasons[0]
    assert 0.45 < result.poi < 0.8
    assert result.power.needed.startswith("Needed for a pooled CI no wider than the minimum effect")
    assert "--trials 5" in result.power.needed and "held-out utterances" in result.power.needed
    assert result.power.units_needed > 24


def test_needed_utterances_scale_with_the_square_of_the_ci_width():
    """Quadrupling the held-out set roughly halves the CI (one seed: no seed variance), so the
    estimate of utterances needed must scale with the squared ratio of width to minimum effect."""
    small = analyse(noisy_table(n_seeds=1, n=400, seed=1), min_effect=0.004)
    assert small.power.underpowered
    ratio = ((small.ci[1] - small.ci[0]) / 0.004) ** 2
    assert small.power.units_needed == pytest.approx(400 * ratio, rel=0.35)
    big = analyse(noisy_table(n_seeds=1, n=400 * 4, seed=2), min_effect=0.004)
    assert (big.ci[1] - big.ci[0]) == pytest.approx((small.ci[1] - small.ci[0]) / 2, rel=0.25)


def test_min_effect_decides_the_underpowered_flag():
    table = shifted_table([0.5, 0.45, 0.55, 0.5, 0.48])
    assert not analyse(table).power.underpowered  # 10% of a 30% baseline: 3 points, CI ~1 point wide
    strict = analyse(table, min_effect=0.001)
    assert strict.power.underpowered and "wider than the minimum effect" in strict.power.reasons[0]
    assert analyse(table, min_effect_relative=0.01).min_effect == pytest.approx(0.003)


@pytest.mark.parametrize(
    "mean, ci, poi, deltas, cis, expected, rule",
    [
        (-0.02, [-0.03, -0.01], 0.0, [-0.02, -0.02], [[-0.03, -0.01]] * 2, "regression", "ci_below_0"),
        # A regression wins over disagreeing seeds: rule 1 comes first.
        (-0.02, [-0.04, -0.001], 0.0, [0.01, -0.05], [[0.005, 0.02], [-0.06, -0.04]], "regression", "ci_below_0"),
        (0.02, [0.01, 0.03], 0.99, [0.02, 0.02], [[0.01, 0.03]] * 2, "stable gain", "all_seeds_improve"),
        # CI above 0 but POI below 0.95 (only possible with odd draws): not a stable gain.
        (0.02, [0.001, 0.03], 0.94, [0.02, 0.02], [[0.01, 0.03]] * 2, "no significant change", "poi_below_95"),
        (0.02, [0.01, 0.03], 0.99, [0.05, -0.01], [[0.04, 0.06], [-0.02, 0.0]], "unstable", "opposite_seed"),
        (0.0, [-0.01, 0.01], 0.5, [0.02, -0.02], [[0.01, 0.03], [-0.03, -0.01]], "unstable", "seeds_disagree"),
        (0.02, [0.01, 0.03], 0.99, [0.04, 0.0], [[0.03, 0.05], [-0.01, 0.01]], "no significant change", "seed_not_improved"),
        (0.001, [-0.01, 0.01], 0.6, [0.002, -0.001], [[-0.01, 0.01]] * 2, "no significant change", "ci_includes_0"),
    ],
)
def test_verdict_rules_in_the_notes_order(mean, ci, poi, deltas, cis, expected, rule):
    assert sig.decide_verdict(mean, ci, poi, deltas, cis) == (expected, rule)


# --------------------------------------------------------------------------- the bootstrap itself


def _reference_loop(scores: sig.PairedScores, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One resample at a time, utterance by utterance, drawing from the same streams."""
    blocks, _ = sig.resampling_blocks(scores.speakers)
    members: dict[int, list[int]] = {}
    for utterance, block in enumerate(blocks):
        members.setdefault(int(block), []).append(utterance)
    n_blocks, n_seeds = len(members), len(scores.seeds)
    unit_stream, seed_stream = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    per_seed = np.empty((resamples, n_seeds))
    means = np.empty(resamples)
    for b in range(resamples):
        drawn = unit_stream.integers(0, n_blocks, size=n_blocks)
        utterances = [u for block in drawn for u in members[int(block)]]
        words = sum(int(scores.ref_words[u]) for u in utterances)
        for s in range(n_seeds):
            base = sum(int(scores.baseline_errors[s, u]) for u in utterances)
            tuned = sum(int(scores.tuned_errors[s, u]) for u in utterances)
            per_seed[b, s] = (base - tuned) / words
        picked = seed_stream.integers(0, n_seeds, size=n_seeds)
        means[b] = np.mean([per_seed[b, p] for p in picked])
    return per_seed, means


@pytest.mark.parametrize("speakers", [0, 12], ids=["utterances", "speaker-blocks"])
def test_vectorised_bootstrap_matches_a_plain_loop(speakers):
    rng = np.random.default_rng(7)
    n = 60
    ref_words = rng.integers(1, 15, size=n)
    baseline = rng.binomial(ref_words, 0.3)
    tuned = np.stack([np.maximum(baseline + rng.integers(-2, 2, size=n), 0) for _ in range(3)])
    names = [f"s{j % speakers}" for j in range(n)] if speakers else None
    if speakers:
        names[5] = ""  # an unknown speaker is its own block
    table = sig.validate_scores(table_from_errors(baseline, tuned, ref_words, speakers=names))
    scores = sig.paired_scores(table, "heldout")
    # A small chunk forces several chunks, so chunking must not change the draws.
    draws = sig.bootstrap(scores, resamples=300, seed=11, chunk_elements=7 * n)
    per_seed, means = _reference_loop(scores, 300, 11)
    assert draws.unit == ("speaker" if speakers else "utterance")
    assert draws.units == (13 if speakers else n)
    np.testing.assert_allclose(draws.per_seed, per_seed, rtol=0, atol=1e-12)
    np.testing.assert_allclose(draws.mean, means, rtol=0, atol=1e-12)


def test_bootstrap_ci_is_close_to_an_independent_python_bootstrap():
    """Same estimator, different random source (Python's random): CIs and POI agree within noise."""
    table = sig.validate_scores(noisy_table(n_seeds=1, n=300, seed=5))
    scores = sig.paired_scores(table, "heldout")
    draws = sig.bootstrap(scores, resamples=10_000, seed=0).per_seed[:, 0]
    chooser = random.Random(1)
    gap = (scores.baseline_errors[0] - scores.tuned_errors[0]).tolist()
    words = scores.ref_words.tolist()
    reference = []
    for _ in range(4000):
        picks = [chooser.randrange(len(gap)) for _ in gap]
        reference.append(sum(gap[i] for i in picks) / sum(words[i] for i in picks))
    width = np.percentile(reference, 97.5) - np.percentile(reference, 2.5)
    for mine, theirs in zip(sig.interval(draws), np.percentile(reference, [2.5, 97.5])):
        assert abs(mine - theirs) < 0.08 * width
    assert sig.probability_of_improvement(draws) == pytest.approx(np.mean(np.array(reference) > 0), abs=0.04)


def test_paired_resampling_gives_a_narrower_ci_than_unpaired():
    """Baseline and tuned errors are highly correlated per utterance; pairing must exploit that."""
    rng = np.random.default_rng(2)
    ref_words = rng.integers(5, 30, size=400)
    baseline = rng.binomial(ref_words, 0.3)
    tuned = np.maximum(baseline - (rng.random(400) < 0.1), 0)[None, :]
    scores = sig.paired_scores(sig.validate_scores(table_from_errors(baseline, tuned, ref_words)), "heldout")
    paired = sig.interval(sig.bootstrap(scores, resamples=2000).per_seed[:, 0])
    a, b = rng.integers(0, 400, size=(2, 2000, 400))
    unpaired = (baseline[a].sum(1) / ref_words[a].sum(1)) - (tuned[0][b].sum(1) / ref_words[b].sum(1))
    assert paired[1] - paired[0] < 0.3 * (np.percentile(unpaired, 97.5) - np.percentile(unpaired, 2.5))
    assert paired[0] > 0


def test_same_seed_same_draws_other_seed_other_draws():
    scores = sig.paired_scores(sig.validate_scores(noisy_table(n_seeds=3, n=200)), "heldout")
    first, again, other = (sig.bootstrap(scores, resamples=500, seed=s) for s in (4, 4, 5))
    np.testing.assert_array_equal(first.mean, again.mean)
    assert not np.array_equal(first.mean, other.mean)


def test_speaker_blocks_need_ten_speakers():
    assert sig.resampling_blocks(np.array([f"s{i % 9}" for i in range(40)]))[1] == "utterance"
    blocks, unit = sig.resampling_blocks(np.array([f"s{i % 10}" for i in range(40)] + ["", ""]))
    assert unit == "speaker"
    assert len(set(blocks[:40])) == 10 and blocks[40] != blocks[41]
    assert sig.resampling_blocks(np.array([""] * 30))[1] == "utterance"


def test_empty_references_are_dropped_and_counted():
    ref_words = np.array([5, 0, 5, 5])
    table = table_from_errors(np.array([2, 3, 1, 1]), np.array([[1, 0, 1, 1]]), ref_words)
    scores = sig.paired_scores(sig.validate_scores(table), "heldout")
    assert scores.dropped_empty == 1 and len(scores.ref_words) == 3
    assert scores.delta[0] == pytest.approx(1 / 15)
    budget = sig.assess_budget(scores, 0.02, resamples=200)
    assert budget.dropped_empty == 1  # a budget says so too, in report.md's words
    assert "1 utterance with an empty normalised reference is not scored." in budget_explanation(budget)


# --------------------------------------------------------------------------- validation


def _good_table() -> pd.DataFrame:
    return table_from_errors(np.array([1, 2, 0]), np.array([[1, 1, 0], [0, 2, 0]]), np.array([3, 4, 2]))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda t: t.drop(columns=["errors", "speaker"]), "missing column(s) speaker, errors"),
        (lambda t: t.assign(system=t["system"].replace("tuned", "Tuned")), "'Tuned'"),
        (lambda t: t.assign(errors=t["errors"].astype(float) + 0.5), "column 'errors' must hold non-negative integers"),
        (lambda t: t.assign(ref_words=-t["ref_words"]), "column 'ref_words' must hold non-negative integers"),
        (lambda t: t.assign(errors=t["errors"].astype(object).where(t.index != 2, None)), "column 'errors' is empty at row(s) 2"),
        (lambda t: t.assign(seed=t["seed"].astype(str) + "x"), "column 'seed' must hold integers"),
        (lambda t: t[~((t["seed"] == 1) & (t["system"] == "baseline"))], "seed 1 has no baseline rows"),
        (lambda t: t[~((t["seed"] == 1) & (t["utterance_id"] == "utt0002"))], "different set of utterances"),
        (lambda t: pd.concat([t, t.iloc[:1]]), "repeat a (seed, system, eval_set, utterance_id)"),
        (lambda t: t.assign(ref_words=t["ref_words"].where(t.index != 0, 9)), "different ref_words"),
        (lambda t: t.iloc[:0], "no rows"),
    ],
    ids=["missing-columns", "system-label", "fractional", "negative", "null", "seed-text", "no-baseline",
         "utterance-sets", "duplicates", "ref-words", "empty"],
)
def test_bad_tables_are_refused_with_a_message_naming_the_problem(corrupt, message):
    with pytest.raises(sig.ScoresError) as caught:
        sig.validate_scores(corrupt(_good_table()), source="scores.parquet")
    assert message in str(caught.value)
    assert str(caught.value).startswith("scores.parquet: ")


def test_wrong_system_label_message_says_what_is_expected():
    table = _good_table()
    table.loc[3, "system"] = "lora"
    with pytest.raises(sig.ScoresError, match=r"'lora' at row\(s\) 3; expected 'baseline' or 'tuned'"):
        sig.validate_scores(table, "x.parquet")


def test_extra_columns_and_unknown_speakers_are_accepted():
    table = _good_table().assign(notes="anything", speaker=None)
    checked = sig.validate_scores(table)
    assert (checked["speaker"] == "").all() and "notes" in checked.columns


def test_an_eval_set_without_reference_words_is_refused():
    table = table_from_errors(np.array([1, 0]), np.array([[0, 0]]), np.array([0, 0]))
    with pytest.raises(sig.ScoresError, match="every utterance has an empty normalised reference"):
        sig.paired_scores(sig.validate_scores(table), "heldout")


def test_unknown_eval_set_is_named():
    with pytest.raises(sig.ScoresError, match="'canary' is not in the scores table"):
        sig.paired_scores(sig.validate_scores(_good_table()), "canary")


def test_baselines_that_differ_across_seeds_are_reported():
    table = _good_table()
    assert sig.baselines_identical(table)["identical"] is True
    table.loc[(table["seed"] == 1) & (table["system"] == "baseline") & (table["utterance_id"] == "utt0001"), "hypothesis"] = "other"
    check = sig.baselines_identical(table)
    assert check["identical"] is False and check["differing_utterances"] == ["heldout/utt0001"]
    # Seed 1 read its baseline from another run's cached decode: too few decodes to compare.
    cached = sig.baselines_identical(table, cached_seeds={1})
    assert cached["checked"] is False and "1 of 2 seeds read their baseline from the decode cache" in cached["why"]


def test_plain_wers_of_a_secondary_eval_set():
    table = pd.concat([_good_table(), table_from_errors(np.array([1, 1]), np.array([[2, 2], [0, 1]]), np.array([4, 4]), eval_set="canary")])
    wers = sig.plain_wers(sig.validate_scores(table), "canary")
    assert wers == {"seeds": [0, 1], "baseline_wer": [0.25, 0.25], "tuned_wer": [0.5, 0.125], "dropped_empty_references": 0}


# --------------------------------------------------------------------------- budgets: non-inferiority


def budget_of(table: pd.DataFrame, limit: float, resamples: int = 2000, seed: int = 0) -> sig.BudgetResult:
    return sig.assess_budget(sig.paired_scores(sig.validate_scores(table), "heldout"), limit, resamples=resamples, seed=seed)


def test_a_small_rise_on_many_utterances_is_within_budget():
    result = budget_of(shifted_table([-0.05] * 5), limit=0.02)  # about +0.5 points
    assert result.decision == "within budget"
    assert result.rise_mean == pytest.approx(0.005, abs=0.002) and result.upper_95 <= 0.02
    assert result.seeds_over == 0 and result.needed == ""


def test_a_large_rise_on_many_utterances_is_over_budget():
    result = budget_of(shifted_table([-0.3] * 5), limit=0.02)  # about +3 points
    assert result.decision == "over budget"
    assert result.lower_95 > 0.02 and result.seeds_over == 5 and result.needed == ""


def test_a_rise_near_the_limit_on_few_utterances_is_inconclusive_and_says_what_would_settle_it():
    result = budget_of(shifted_table([-0.15] * 3, n=30), limit=0.02)
    assert result.decision == "inconclusive"
    assert result.lower_95 <= 0.02 < result.upper_95
    direction = "within budget" if result.rise_mean < 0.02 else "over budget"
    assert result.needed.startswith(f"To settle it ({direction} if the mean rise stays at ")
    assert "--trials 5" in result.needed and "held-out utterances (now 30)" in result.needed


def test_the_budget_reuses_the_gains_bootstrap_with_the_sign_flipped():
    scores = sig.paired_scores(sig.validate_scores(noisy_table(n_seeds=3, n=200)), "heldout")
    draws = sig.bootstrap(scores, resamples=1000, seed=3)
    result = sig.assess_budget(scores, 0.01, resamples=1000, seed=3)
    assert result.upper_95 == pytest.approx(-np.percentile(draws.mean, 5))
    assert result.lower_95 == pytest.approx(-np.percentile(draws.mean, 95))
    assert result.rise_mean == pytest.approx(-scores.delta.mean())


@pytest.mark.parametrize("lower, upper, limit, expected", [
    (0.0, 0.01, 0.02, "within budget"),
    (0.0, 0.0344 - 0.0144, 0.02, "within budget"),  # on the limit, by the sweep's own rule (WERs are word-count ratios)
    (0.021, 0.03, 0.02, "over budget"),
    (0.02, 0.03, 0.02, "inconclusive"),  # the lower bound touching the limit does not show it was exceeded
    (0.01, 0.03, 0.02, "inconclusive"),
])
def test_budget_decision_rules(lower, upper, limit, expected):
    assert sig.decide_budget(lower, upper, limit) == expected


def test_readme_names_every_verdict_rule():
    """verdict.json's verdict_rule is documented: a rule added here and not there fails."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [rule for rule in sig.VERDICT_RULES if f"`{rule}`" not in readme]
    assert not missing, f"README.md does not name verdict rules {missing}"
