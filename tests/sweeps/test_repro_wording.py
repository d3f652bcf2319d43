"""What repro prints (console), writes to verdict.json and to report.md agree with each other and
with the rules they state: a figure printed beside a rule stays on the rule's side, counts are
worded right, what "would be needed" is sensible, and a warning never undercuts the headline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeps.repro import cli as repro
from sweeps.repro import significance

try:
    from scores_tables import shifted_table, table_from_errors
except ImportError:  # tests/sweeps imported as a package
    from tests.sweeps.scores_tables import shifted_table, table_from_errors

RESAMPLES = "2000"
NUMBER = r"([+-]?\d+\.\d+)"


def from_scores(table: pd.DataFrame, folder: Path, capsys, *flags: str) -> tuple[int, str, dict, str]:
    """(exit status, console output, verdict.json, report.md) of ``--from-scores`` on ``table``."""
    folder.mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / "scores.parquet", index=False)
    capsys.readouterr()
    code = repro.main(["--from-scores", str(folder / "scores.parquet"), "--resamples", RESAMPLES, *flags])
    printed = capsys.readouterr()
    verdict = json.loads((folder / "verdict.json").read_text()) if (folder / "verdict.json").exists() else {}
    report = (folder / "report.md").read_text() if (folder / "report.md").exists() else ""
    return code, printed.out + printed.err, verdict, report


def tiny_shift(gain: bool) -> pd.DataFrame:
    """10 of 200 utterances (1000 words each) one error better (or worse) on every seed: a
    delta of 0.005 points whose CI excludes 0 yet lies within 0.01 points of it."""
    baseline = np.full(200, 50)
    shifted = baseline.copy()
    shifted[:10] -= 1
    if not gain:
        baseline, shifted = shifted, baseline
    return table_from_errors(baseline, np.stack([shifted] * 5), np.full(200, 1000))


def printed_ci(text: str) -> tuple[float, float]:
    low, high = re.search(rf"95% CI \[{NUMBER}, {NUMBER}\]", text).groups()
    return float(low), float(high)


@pytest.mark.parametrize("gain, verdict_name", [(True, "stable gain"), (False, "regression")])
def test_a_ci_bound_near_0_prints_on_the_side_the_verdict_says(tmp_path, capsys, gain, verdict_name):
    """"95% CI [+0.00, +0.01] ... the CI lies above 0" contradicts itself: a bound that is not 0
    keeps its sign in the headline and in the report's per-seed table."""
    _, printed, verdict, report = from_scores(tiny_shift(gain), tmp_path, capsys)
    assert verdict["verdict"] == verdict_name
    low, high = printed_ci(verdict["sentence"])
    assert (low > 0) if gain else (high < 0), verdict["sentence"]
    assert verdict["sentence"] in printed
    mean_row = next(line for line in report.splitlines() if line.startswith("| **mean**"))
    low, high = (float(x) for x in re.search(rf"\[{NUMBER}, {NUMBER}\]", mean_row).groups())
    assert (low > 0) if gain else (high < 0), mean_row
    assert "5.000%" in verdict["sentence"] and "4.995%" in verdict["sentence"]  # baseline and tuned WER differ as the delta says


def test_a_poi_just_under_095_never_prints_as_095(tmp_path, capsys):
    """3 of 100 utterances improve on every seed: the pooled CI's lower bound is exactly 0 and
    POI 0.948, which must not print as 0.95 (the stable-gain threshold) anywhere."""
    baseline = np.full(100, 2)
    tuned = baseline.copy()
    tuned[:3] -= 1
    _, _, verdict, report = from_scores(table_from_errors(baseline, np.stack([tuned] * 5), np.full(100, 10)), tmp_path, capsys)
    assert verdict["verdict"] == "no significant change" and verdict["ci"][0] == 0 and 0.94 < verdict["poi"] < 0.95
    assert "95% CI [+0.00, +0.70]" in verdict["sentence"] and "; the CI includes 0." in verdict["sentence"]
    poi = float(re.search(r"POI (\d\.\d+)", verdict["sentence"]).group(1))
    assert poi < 0.95 and poi == pytest.approx(verdict["poi"], abs=0.001)
    mean_row = next(line for line in report.splitlines() if line.startswith("| **mean**"))
    assert f"| {verdict['poi']:.3f} |" in mean_row and float(f"{verdict['poi']:.3f}") < 0.95


def budget_table(canary_shift: float) -> pd.DataFrame:
    """A clear gain on heldout; a canary whose WER rises about -canary_shift / 10 on every seed."""
    return pd.concat([shifted_table([0.5, 0.45, 0.55, 0.5, 0.48], speakers=12),
                      shifted_table([canary_shift] * 5, seed=1).assign(eval_set="canary")])


def canary_bounds(table: pd.DataFrame) -> tuple[float, float]:
    """The canary's one-sided 95% bounds, as repro computes them (same resamples and seed)."""
    result = significance.assess_budget(significance.paired_scores(table, "canary"), 0.02, int(RESAMPLES), 0)
    return result.lower_95, result.upper_95


def test_a_budget_bound_a_hair_past_the_limit_prints_past_it(tmp_path, capsys):
    """"lower 95% bound +2.85 > +2.85": the bound that decides the budget prints on its side of the limit."""
    table = budget_table(-0.3)
    lower, upper = canary_bounds(table)
    limit = lower - 2e-6  # 0.0002 points below the lower bound: over budget, by a hair
    _, printed, verdict, report = from_scores(table, tmp_path, capsys, "--max-wer-increase", f"canary={limit!r}")
    assert verdict["budgets"]["canary"]["decision"] == "over budget"
    shown_lower, shown_limit = re.search(rf"canary over budget \(mean rise {NUMBER} points, lower 95% bound {NUMBER} > {NUMBER}\)",
                                         verdict["sentence"]).groups()[1:]
    assert float(shown_lower) > float(shown_limit), verdict["sentence"]
    bounds = re.search(rf"one-sided 95% bounds \[{NUMBER}, {NUMBER}\] against a limit of {NUMBER}", report).groups()
    assert float(bounds[0]) > float(bounds[2]), bounds


def test_a_ci_exactly_as_wide_as_the_minimum_effect_is_not_wider():
    """0.035 - 0.005 is 0.030000000000000002 in floating point: not wider than a 0.03 minimum effect."""
    power = significance.assess_power(5, [0.005, 0.035], 0.1 * 0.3, 0.001, 600, "utterance", 600)
    assert not power.underpowered and power.reasons == []
    wider = significance.assess_power(5, [0.005, 0.0351], 0.03, 0.001, 600, "utterance", 600)
    assert wider.reasons == ["the pooled 95% CI is 3.01 points wide, wider than the minimum effect of 3.00 points"]


def counts_in(text: str) -> list[int]:
    """The whole numbers a "needed" sentence asks for (seeds, utterances)."""
    return [int(n) for n in re.findall(r"(?<![\d.])\d+(?![\d.])", text)]


def test_what_a_tiny_minimum_effect_needs_is_out_of_reach_not_millions_of_seeds(tmp_path, capsys):
    """A minimum effect of 0.001 points would need millions of seeds: the report says it is
    out of reach and which flag sets a larger one, rather than "--trials 4466337"."""
    _, _, verdict, report = from_scores(shifted_table([0.5] * 5), tmp_path, capsys, "--min-effect-abs", "0.00001")
    assert verdict["underpowered"] is True
    assert "wider than the minimum effect of 0.001 points" in verdict["sentence"]  # not "of 0.00 points"
    assert verdict["needed"] == (
        "Needed for a pooled CI no wider than the minimum effect (0.001 points): more than 100 times the seeds or held-out "
        "utterances there are now (5 seeds, 600 utterances): a minimum effect this small is out of reach "
        "(--min-effect or --min-effect-abs sets a larger one).")
    assert f"- {verdict['needed']}" in report


def test_a_budget_whose_mean_rise_sits_a_hair_from_the_limit_needs_no_astronomical_data(tmp_path, capsys):
    """The mean rise 0.00003 points below the limit: the bounds straddle it, and no realistic
    number of seeds or utterances settles it; the explanation says so in those words."""
    table = budget_table(-0.3)
    rise = float(significance.paired_scores(table, "canary").delta.mean() * -1)
    _, _, verdict, report = from_scores(table, tmp_path, capsys, "--max-wer-increase", f"canary={round(rise, 6)}")
    budget = verdict["budgets"]["canary"]
    assert budget["decision"] == "inconclusive" and 0 < abs(budget["limit"] - rise) < 1e-6
    assert budget["needed"] == ("The mean rise is within 0.00003 points of the limit: settling it would take more than 100 "
                                "times the seeds or held-out utterances there are now (5 seeds, 600 utterances).")
    assert max(counts_in(budget["needed"])) <= 600 and budget["needed"] in report
    near = from_scores(table, tmp_path / "near", capsys, "--max-wer-increase", "canary=0.031")[2]["budgets"]["canary"]
    assert near["needed"].startswith("To settle it (within budget if the mean rise stays at +3.06 points): at least ")
    assert 5 < counts_in(near["needed"])[0] <= 500  # a number of seeds one can run


PLURAL_SLIPS = re.compile(r"\(s\)|\b1 (seeds|utterances|speakers|hypotheses|reference words)\b|\bof 1 seeds\b")


def test_one_seed_is_worded_as_one_and_the_recommendation_names_only_what_is_short(tmp_path, capsys):
    """A 1-seed run with a budgeted canary: no "1 seeds", no "seed(s)", no sd of one seed, and
    the recommendation asks for the seeds it lacks, not for the 10 utterances it has 20 times over."""
    table = pd.concat([shifted_table([0.3], n=200), shifted_table([-0.1], n=200, seed=1).assign(eval_set="canary")])
    _, printed, verdict, report = from_scores(table, tmp_path, capsys, "--max-wer-increase", "canary=0.02")
    assert verdict["verdict"] == "stable gain" and verdict["budgets"]["canary"]["decision"] == "within budget"
    assert verdict["recommendation"] == "no (1 seed: a recommendation needs at least 5 (--trials 5))"
    assert f"Recommended: {verdict['recommendation']}" in printed
    assert "over 1 seed and 200 utterances." in report
    for text in (printed, report):
        assert not PLURAL_SLIPS.search(text), PLURAL_SLIPS.search(text).group(0)
    mean_row = next(line for line in report.splitlines() if line.startswith("| **mean**"))
    assert "±" not in mean_row and "(sd" not in mean_row  # as the headline: one seed has no spread


def test_too_few_utterances_do_not_ask_for_seeds_there_are(tmp_path, capsys):
    _, _, verdict, _ = from_scores(shifted_table([0.5] * 5, n=5), tmp_path, capsys)
    assert verdict["recommendation"] == ("no (the verdict is `no significant change`; 5 held-out utterances: "
                                         "a recommendation needs at least 10)")


def test_several_seeds_named_in_the_headline_read_as_several(tmp_path, capsys):
    disagree = from_scores(shifted_table([0.5, 0.5, -0.5, 0.5, -0.5]), tmp_path / "disagree", capsys)[2]
    assert disagree["verdict_rule"] == "seeds_disagree"
    assert "seeds significantly disagree: the CIs of seeds 0, 1 and 3 lie above 0, the CIs of seeds 2 and 4 below (" in disagree["sentence"]
    flat = from_scores(shifted_table([0.1, 0.1, 0.1, 0.0, 0.0]), tmp_path / "flat", capsys)[2]
    assert flat["verdict_rule"] == "seed_not_improved" and flat["sentence"].endswith("but seeds 3 and 4 did not improve.")


def test_a_rerun_that_differs_on_one_hypothesis_says_hypothesis(tmp_path, capsys):
    (tmp_path / "determinism.json").write_text(json.dumps({"reruns": [{"seed": 0, "identical": False, "differing": 1, "examples": []}]}))
    _, printed, verdict, report = from_scores(shifted_table([0.5] * 5, n=50), tmp_path, capsys)
    assert verdict["deterministic"] == "no" and "deterministic: no" in printed
    assert "- Deterministic: no — baseline hypotheses identical across seeds; seed 0 rerun differs on 1 hypothesis" in report


def test_an_unbudgeted_set_whose_references_are_all_empty_is_reported_unscored(tmp_path, capsys):
    """Every canary reference normalises to nothing: no WER to show, said so, not a KeyError traceback;
    with a budget on it, exit 2 naming the file and the set."""
    empty = table_from_errors(np.zeros(20, dtype=int), np.ones((5, 20), dtype=int), np.zeros(20, dtype=int), eval_set="canary")
    partly = table_from_errors(np.array([0, 1, 1]), np.array([[1, 1, 1]] * 5), np.array([0, 5, 5]), eval_set="source")
    code, printed, verdict, report = from_scores(pd.concat([shifted_table([0.5] * 5), empty, partly]), tmp_path, capsys)
    assert code == 0 and verdict["verdict"] == "stable gain"
    assert verdict["other_eval_sets"]["canary"] == {"seeds": [], "baseline_wer": [], "tuned_wer": [], "dropped_empty_references": 20}
    assert "- `canary`: not scored: every utterance's normalised reference is empty (20 utterances dropped)" in report
    assert "- `source`: tuned worse than baseline on 0 of 5 seeds (mean change +0.00 WER points); 1 utterance with an empty normalised reference dropped" in report
    assert verdict["other_eval_sets"]["source"]["tuned_wer"] == [0.2] * 5  # 2 errors in 10 words: the empty reference's error counts nowhere
    code, printed, _, _ = from_scores(pd.concat([shifted_table([0.5] * 5), empty]), tmp_path / "budget", capsys,
                                      "--max-wer-increase", "canary=0.02")
    assert code == repro.EXIT_BAD_INPUT
    assert f"error: {tmp_path / 'budget' / 'scores.parquet'}: eval set 'canary': every utterance has an empty normalised reference" in printed


def test_a_regression_on_the_select_set_speaks_of_its_delta_not_a_gain(tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"name": "demo", "selected_on": {"name": "heldout", "path": "/d/dev.jsonl"},
                                                   "eval_manifests": [["heldout", "/d/dev.jsonl"]]}))
    _, _, verdict, _ = from_scores(shifted_table([-0.5] * 5), tmp_path, capsys)
    assert verdict["verdict"] == "regression" and verdict["selection_bias"] is True
    assert verdict["sentence"].startswith("Regression on heldout, the set the sweep selected this recipe on, so the delta is biased upward")
