"""The repro command without a model or Ray: --from-scores, the report files, config and seed
choice, determinism checks, and that --help stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_manifest, write_tone
from sweeps.repro import cli as repro
from sweeps.repro import seeds
from sweeps.repro.selection import check_sweep_finished, read_recipe_file
from trainable.config import REPO_ROOT, TrialConfig

try:
    from scores_tables import noisy_table, shifted_table, table_from_errors
except ImportError:  # tests/sweeps imported as a package
    from tests.sweeps.scores_tables import noisy_table, shifted_table, table_from_errors

VERDICT_KEYS = {"verdict", "underpowered", "mean_delta", "ci", "poi", "deterministic", "baseline_wer", "tuned_wer_mean", "tuned_wer_sd", "seeds"}
SEED_KEYS = {"seed", "delta", "ci", "poi", "tuned_wer"}


def write_table(table: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return path


def run_cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "sweeps.repro", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- --from-scores


def test_from_scores_writes_verdict_report_and_plots(tmp_path):
    scores = write_table(pd.concat([
        shifted_table([0.5, 0.45, 0.55, 0.5, 0.48], speakers=12),
        table_from_errors(np.array([1, 2]), np.array([[2, 2]] * 5), np.array([4, 4]), eval_set="canary"),
    ]), tmp_path / "in" / "scores.parquet")
    out = tmp_path / "out"
    assert repro.main(["--from-scores", str(scores), "--output-dir", str(out), "--resamples", "1000"]) == 0
    verdict = json.loads((out / "verdict.json").read_text())
    assert VERDICT_KEYS <= set(verdict) and all(SEED_KEYS <= set(s) for s in verdict["seeds"])
    assert verdict["verdict"] == "stable gain" and verdict["underpowered"] is False
    assert verdict["resampling_unit"] == "speaker" and verdict["resampling_units"] == 12
    assert [s["seed"] for s in verdict["seeds"]] == [0, 1, 2, 3, 4]
    assert verdict["other_eval_sets"]["canary"]["tuned_wer"] == [0.5] * 5
    assert verdict["deterministic"] == "unknown"  # baselines identical, but no same-seed rerun stored
    report = (out / "report.md").read_text()
    assert verdict["sentence"] in report
    for section in ("## Run summary", "## Per-seed results (heldout)", "## Other eval sets", "## Sample predictions that changed"):
        assert section in report
    assert "![per-seed delta with 95% CIs](seed_deltas.png)" in report
    assert "tuned worse than baseline on 5 of 5 seeds" in report
    assert "- Warning: `canary` is worse with the adapter on 5 of 5 seeds" in report
    for plot in ("seed_deltas.png", "mean_delta_bootstrap.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_scores_and_bootstrap_seed_give_identical_files_in_fresh_processes(tmp_path):
    scores = write_table(noisy_table(n_seeds=3, n=300), tmp_path / "scores.parquet")
    outputs = []
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        result = run_cli("--from-scores", str(scores), "--output-dir", str(tmp_path / name), "--seed", seed, "--resamples", "2000")
        assert result.returncode == 0, result.stderr
        outputs.append(tmp_path / name)
    a, b, c = outputs
    assert (a / "verdict.json").read_bytes() == (b / "verdict.json").read_bytes()
    assert (a / "report.md").read_bytes() == (b / "report.md").read_bytes()
    assert json.loads((a / "verdict.json").read_text())["ci"] != json.loads((c / "verdict.json").read_text())["ci"]


def test_from_scores_uses_the_eval_set_asked_for(tmp_path):
    table = pd.concat([noisy_table(n_seeds=2, n=50).assign(eval_set="canary"), shifted_table([0.5] * 2, n=50)])
    scores = write_table(table, tmp_path / "scores.parquet")
    assert repro.main(["--from-scores", str(scores), "--output-dir", str(tmp_path / "first"), "--resamples", "500"]) == 0
    assert json.loads((tmp_path / "first" / "verdict.json").read_text())["eval_set"] == "canary"
    assert repro.main(["--from-scores", str(scores), "--eval-set", "heldout", "--output-dir", str(tmp_path / "o"), "--resamples", "500"]) == 0
    verdict = json.loads((tmp_path / "o" / "verdict.json").read_text())
    assert verdict["eval_set"] == "heldout" and list(verdict["other_eval_sets"]) == ["canary"]


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda t: t.drop(columns=["ref_words"]), "missing column(s) ref_words"),
        (lambda t: t.assign(system=t["system"].replace("baseline", "base")), "column 'system' has value(s) 'base'"),
    ],
    ids=["missing-column", "system-label"],
)
def test_from_scores_on_a_bad_file_exits_2_naming_file_and_problem(tmp_path, corrupt, message):
    scores = write_table(corrupt(shifted_table([0.5, 0.5], n=20)), tmp_path / "bad.parquet")
    result = run_cli("--from-scores", str(scores), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == repro.EXIT_BAD_INPUT
    assert f"error: {scores}: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "verdict.json").exists()


def test_from_scores_on_a_file_that_is_not_parquet(tmp_path, capsys):
    path = tmp_path / "scores.parquet"
    path.write_text("not parquet")
    assert repro.main(["--from-scores", str(path)]) == repro.EXIT_BAD_INPUT
    assert "cannot be read as a scores table" in capsys.readouterr().err
    assert repro.main(["--from-scores", str(tmp_path / "missing.parquet")]) == repro.EXIT_BAD_INPUT
    assert "no such file" in capsys.readouterr().err


def test_require_stable_gain_gates_the_exit_status(tmp_path):
    gain = write_table(shifted_table([0.5] * 5), tmp_path / "gain" / "scores.parquet")
    flat = write_table(noisy_table(n_seeds=5), tmp_path / "flat" / "scores.parquet")
    assert repro.main(["--from-scores", str(gain), "--require", "stable-gain", "--resamples", "500"]) == 0
    result = run_cli("--from-scores", str(flat), "--require", "stable-gain", "--resamples", "500")
    assert result.returncode == repro.EXIT_GATE_FAILED
    assert "No significant change" in result.stdout and "'no significant change'" in result.stderr


def test_min_effect_options_reach_the_statistics(tmp_path):
    scores = write_table(shifted_table([0.5] * 5), tmp_path / "scores.parquet")
    repro.main(["--from-scores", str(scores), "--resamples", "500", "--min-effect-abs", "0.0001"])
    strict = json.loads((tmp_path / "verdict.json").read_text())
    assert strict["min_effect"] == 0.0001 and strict["underpowered"] is True and strict["min_effect_relative"] is None
    repro.main(["--from-scores", str(scores), "--resamples", "500", "--min-effect", "0.5"])
    loose = json.loads((tmp_path / "verdict.json").read_text())
    assert loose["min_effect"] == pytest.approx(0.15) and loose["underpowered"] is False


# --------------------------------------------------------------------------- light imports


def test_help_imports_no_torch_ray_transformers_or_peft():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['sweeps.repro', '--help']\n"
        "try:\n    runpy.run_module('sweeps.repro', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'ray', 'transformers', 'peft') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert "--from-scores" in result.stdout and "--require" in result.stdout
    assert "HEAVY []" in result.stdout, result.stdout[-500:]


def test_from_scores_imports_no_torch_or_ray(tmp_path):
    scores = write_table(shifted_table([0.5, 0.4], n=30), tmp_path / "scores.parquet")
    code = (
        "import sys\nfrom sweeps.repro import cli as repro\n"
        f"repro.main(['--from-scores', {str(scores)!r}, '--resamples', '200'])\n"
        "print('HEAVY', sorted(m for m in ('torch', 'ray', 'transformers', 'peft') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stdout, result.stdout[-500:] + result.stderr[-2000:]


# --------------------------------------------------------------------------- config, seeds, overrides


def test_default_source_is_the_newest_sweeps_best_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = repro.build_parser().parse_args([])
    with pytest.raises(repro.ReproError, match="no sweep found"):
        repro.find_config_source(args)
    for i, name in enumerate(["old", "new"]):
        path = tmp_path / "results" / name / "best.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"config": TrialConfig(max_steps=3).to_dict(), "eval_wer": 0.1}))
        os.utime(path, (1000 + i, 1000 + i))
    assert repro.find_config_source(args) == (Path("results/new/best.json"), "new", Path("results/new/repro"))
    assert repro.find_config_source(repro.build_parser().parse_args(["--sweep", "old"]))[1] == "old"
    with pytest.raises(repro.ReproError, match="sweeps under results/: new, old"):
        repro.find_config_source(repro.build_parser().parse_args(["--sweep", "nope"]))
    plain = tmp_path / "mine.json"
    TrialConfig().to_json(plain)
    assert repro.find_config_source(repro.build_parser().parse_args(["--config", str(plain)]))[2] == Path("results/repro-mine")


def test_config_overrides_follow_the_sweeps_key_value_style(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"config": TrialConfig(lora_r=4).to_dict()}))
    config = repro.load_config(read_recipe_file(best), ["max_steps=50", "trial.learning_rate=3e-4", "target_modules=qv"])
    assert (config.max_steps, config.learning_rate, config.target_modules, config.lora_r) == (50, 3e-4, ("q_proj", "v_proj"), 4)
    with pytest.raises(repro.ReproError, match="unknown config field"):
        repro.load_config(read_recipe_file(best), ["max_stepz=5"])
    with pytest.raises(repro.ReproError, match="override seed: set per seed by repro; use --seeds"):
        repro.load_config(read_recipe_file(best), ["seed=3"])
    with pytest.raises(repro.ReproError, match="is not KEY=VALUE"):
        repro.load_config(read_recipe_file(best), ["max_steps"])
    yaml_config = tmp_path / "sweep.yaml"
    yaml_config.write_text("name: x\ntrial:\n  max_steps: 7\n  lora_r: 2\n")
    assert repro.load_config(read_recipe_file(yaml_config), []).max_steps == 7


def test_bad_config_on_the_command_line_exits_2(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"config": TrialConfig().to_dict()}))
    result = run_cli("--config", str(best), "lora_r=0")
    assert result.returncode == repro.EXIT_BAD_INPUT and "lora_r: must be >= 1" in result.stderr


def test_overrides_may_sit_between_options(tmp_path, capsys):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"config": TrialConfig().to_dict()}))
    assert repro.main(["--config", str(best), "max_steps=5", "--trials", "2", "lora_r=0"]) == repro.EXIT_BAD_INPUT
    assert "lora_r: must be >= 1" in capsys.readouterr().err


def test_seeds_avoid_the_sweeps_own_seed_unless_given(capsys):
    parse = repro.build_parser().parse_args
    assert repro.choose_seeds(parse(["--trials", "3"]), 42) == [43, 44, 45]
    assert repro.choose_seeds(parse(["--trials", "3"]), 42, [42, 43, 1042, 45]) == [44, 46, 47]  # the sweep's selection seeds
    assert repro.choose_seeds(parse(["--seeds", "7,1,9"]), 42) == [7, 1, 9]
    assert repro.choose_seeds(parse(["--seeds", "43,9"]), 42, [42, 43]) == [43, 9]
    assert "--seeds reuses seed(s) [43] the sweep selected this recipe with" in capsys.readouterr().err
    with pytest.raises(repro.ReproError, match="distinct"):
        repro.choose_seeds(parse(["--seeds", "1,1"]), 42)
    with pytest.raises(repro.ReproError, match="at least 1"):
        repro.choose_seeds(parse(["--trials", "0"]), 42)


def test_ctrl_c_says_what_is_kept_instead_of_a_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(repro, "rerun", interrupted)
    assert repro.main(["--trials", "2", "--address", "auto"]) == repro.EXIT_INTERRUPTED == 130
    assert "repro: interrupted, so no verdict" in capsys.readouterr().err


def test_trials_and_seeds_must_agree(capsys):
    """--seeds sets the seeds; a --trials that says another count is refused, not silently lost."""
    assert repro.main(["--trials", "3", "--seeds", "1,2"]) == repro.EXIT_BAD_INPUT
    assert "--trials 3 and --seeds 1,2 (2 seeds) disagree" in capsys.readouterr().err
    parse = repro.build_parser().parse_args
    repro.check_args(parse(["--trials", "2", "--seeds", "1,2", "--address", "auto"]))  # agreeing is fine
    assert repro.choose_seeds(parse([]), 42) == [43, 44, 45, 46, 47]  # default: 5 seeds


def test_seed_configs_give_each_run_its_seed_folder_and_threads(tmp_path):
    config = TrialConfig(max_steps=2)
    runs = seeds.seed_configs(config, [5, 6], reruns=1, repro_dir=tmp_path, cpus=2.0)
    assert [(seed, rerun) for seed, rerun, _ in runs] == [(5, False), (6, False), (5, True)]
    assert [c.output_dir for _, _, c in runs] == [str(tmp_path / "seed_5"), str(tmp_path / "seed_6"), str(tmp_path / "seed_5_rerun")]
    assert all(c.seed == s and c.num_threads == 2 and Path(c.train_manifest).is_absolute() for s, _, c in runs)


# --------------------------------------------------------------------------- rows and determinism


def _write_reports(directory: Path, hypotheses: dict[str, list[str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for system, texts in hypotheses.items():
        utterances = [
            {"id": f"u{i}", "speaker": None if i else "spk", "reference": "a b", "hypothesis": text, "ref_words": 2,
             "errors": int(text != "a b"), "substitutions": int(text != "a b"), "deletions": 0, "insertions": 0,
             "orthographic_ref_words": 2, "orthographic_errors": int(text != "a b")}
            for i, text in enumerate(texts)
        ]
        (directory / f"heldout_{system}.json").write_text(json.dumps({"eval_set": "heldout", "system": system, "utterances": utterances}))


def test_utterance_rows_follow_the_scores_schema(tmp_path):
    _write_reports(tmp_path, {"baseline": ["a c", "a b"], "tuned": ["a b", "a b"]})
    rows = seeds.utterance_rows(tmp_path, ["heldout"], seed=3)
    table = seeds.scores_table([{"rerun": False, "rows": rows}], ["heldout"])
    assert list(table.columns) == list(seeds.SCORE_COLUMNS)
    assert table[["seed", "system", "utterance_id", "speaker", "errors"]].values.tolist() == [
        [3, "baseline", "u0", "spk", 1], [3, "baseline", "u1", "", 0], [3, "tuned", "u0", "spk", 0], [3, "tuned", "u1", "", 0]]
    from sweeps.repro.significance import validate_scores

    validate_scores(table, "rows")  # what repro writes, --from-scores accepts


def test_rerun_and_baseline_checks_make_the_determinism_answer():
    def run(seed, rerun, tuned):
        rows = [{"eval_set": "heldout", "system": "tuned", "utterance_id": f"u{i}", "hypothesis": h} for i, h in enumerate(tuned)]
        return {"seed": seed, "rerun": rerun, "rows": rows}

    same = seeds.rerun_checks([run(1, False, ["a", "b"]), run(1, True, ["a", "b"]), run(2, False, ["c", "d"])])
    assert same == [{"seed": 1, "identical": True, "differing": 0, "examples": [], "devices": [None, None], "nodes": [None, None],
                     "threads": [None, None]}]
    differs = seeds.rerun_checks([run(1, False, ["a", "b"]), run(1, True, ["a", "x"])])
    assert differs[0]["identical"] is False and differs[0]["examples"] == ["heldout/tuned/u1"]
    baseline_ok = {"checked": True, "identical": True, "count": 0}
    assert seeds.determinism_summary(baseline_ok, same)["deterministic"] == "yes"
    assert seeds.determinism_summary(baseline_ok, differs)["deterministic"] == "no"
    assert seeds.determinism_summary({"checked": True, "identical": False, "count": 3}, same)["deterministic"] == "no"
    assert seeds.determinism_summary({"checked": False}, [])["deterministic"] == "unknown"
    elsewhere = [{**differs[0], "devices": ["cuda", "cpu"]}]
    assert "(ran on cuda then cpu)" in seeds.determinism_summary({"checked": False}, elsewhere)["detail"]
    # A reused seed may have run with another --cpus-per-trial than its fresh rerun: said beside the answer.
    other_threads = [{**differs[0], "threads": [1, 2]}]
    assert "rerun differs on 1 hypothesis (ran with 1 then 2 torch threads)" in seeds.determinism_summary({"checked": False}, other_threads)["detail"]


def test_from_scores_reads_the_rerun_check_stored_beside_the_scores(tmp_path):
    scores = write_table(shifted_table([0.5] * 2, n=40), tmp_path / "scores.parquet")
    (tmp_path / "determinism.json").write_text(json.dumps({"reruns": [{"seed": 0, "identical": False, "differing": 2, "examples": []}]}))
    repro.main(["--from-scores", str(scores), "--resamples", "300", "--output-dir", str(tmp_path / "out")])
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["deterministic"] == "no" and "seed 0 rerun differs on 2 hypotheses" in verdict["determinism"]["detail"]


def test_changed_predictions_show_fixes_and_breakages():
    from sweeps.repro.report import changed_predictions

    table = table_from_errors(np.array([3, 0, 2, 1]), np.array([[0, 2, 2, 0]]), np.array([5, 5, 5, 5]))
    samples = changed_predictions(table, "heldout", 0, limit=4)
    assert [(s["utterance_id"], s["baseline_errors"], s["tuned_errors"]) for s in samples] == [
        ("utt0000", 3, 0), ("utt0003", 1, 0), ("utt0001", 0, 2)]


def planted_tables(canary_shift: float = -0.3, seeds: int = 5) -> pd.DataFrame:
    """A clear gain on heldout (12 speakers) and a canary whose WER rises by about
    -canary_shift / 10 (0.03 = 3 points) on every seed, over 600 utterances."""
    return pd.concat([
        shifted_table([0.5, 0.45, 0.55, 0.5, 0.48][:seeds], speakers=12),
        shifted_table([canary_shift] * seeds, seed=1).assign(eval_set="canary"),
    ])


def mean_rise(table: pd.DataFrame, eval_set: str = "canary") -> float:
    rows = table[table["eval_set"] == eval_set]
    errors = rows.groupby("system")["errors"].sum()
    return float((errors["tuned"] - errors["baseline"]) / rows[rows["system"] == "tuned"]["ref_words"].sum())


@pytest.mark.parametrize("limit, decision", [(0.05, "within budget"), (0.01, "over budget"), (None, "inconclusive")])
def test_the_sweeps_budget_gets_a_non_inferiority_decision_in_the_headline(tmp_path, capsys, limit, decision):
    """best.json's max_wer_increase travels in run.json; the headline states the decision, and no
    per-seed warning below it says otherwise."""
    table = planted_tables()
    limit = round(mean_rise(table), 6) if limit is None else limit  # the mean rise sits on the limit: the bounds straddle it
    scores = write_table(table, tmp_path / "scores.parquet")
    (tmp_path / "run.json").write_text(json.dumps({"name": "demo", "max_wer_increase": {"canary": limit}}))
    assert repro.main(["--from-scores", str(scores), "--resamples", "1000", "--output-dir", str(tmp_path / "out")]) == 0
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    budget = verdict["budgets"]["canary"]
    assert budget["decision"] == decision and budget["limit"] == limit and verdict["max_wer_increase"] == {"canary": limit}
    assert budget["rise_mean"] == pytest.approx(mean_rise(table))
    assert budget["lower_95"] < budget["rise_mean"] < budget["upper_95"]
    assert {"within budget": budget["upper_95"] <= limit, "over budget": budget["lower_95"] > limit,
            "inconclusive": budget["lower_95"] <= limit < budget["upper_95"]}[decision]
    assert (budget["needed"] != "") is (decision == "inconclusive")
    assert verdict["verdict"] == "stable gain" and verdict["recommended"] is (decision == "within budget")
    assert f"Stable gain on heldout: " in verdict["sentence"]
    clause = {"within budget": "canary within budget (", "over budget": "canary over budget (", "inconclusive": "canary budget inconclusive ("}
    assert f"Budgets: {clause[decision]}mean rise +{100 * budget['rise_mean']:.2f} points" in verdict["sentence"]
    printed = capsys.readouterr().out
    assert verdict["sentence"] in printed and "Warning" not in printed and verdict["warnings"] == []
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Budgets on other eval sets (non-inferiority)" in report and f"| {decision} |" in report
    assert f"- Budget on `canary`: `{decision}`." in report
    assert ("- Recommended: yes" in report) is (decision == "within budget")


def test_seeds_over_the_limit_alone_are_folded_into_the_budget_explanation(tmp_path):
    """Every seed rises past 5 points, but two utterances cannot show it: the decision is
    inconclusive, and the per-seed fact is part of its explanation, not a warning beside it."""
    scores = write_table(pd.concat([
        shifted_table([0.5, 0.45, 0.55], speakers=12),
        table_from_errors(np.array([1, 2]), np.array([[2, 2]] * 3), np.array([4, 4]), eval_set="canary"),  # +12.5 points
    ]), tmp_path / "scores.parquet")
    assert repro.main(["--from-scores", str(scores), "--resamples", "500", "--max-wer-increase", "canary=0.05"]) == 0
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["budgets"]["canary"]["decision"] == "inconclusive" and verdict["budgets"]["canary"]["seeds_over"] == 3
    report = (tmp_path / "report.md").read_text()
    assert "3 of 3 seeds alone rose past the limit (worst +12.50)" in report
    assert verdict["budgets"]["canary"]["needed"] == "Too few held-out utterances to resample: at least 10 (now 2)."
    assert not any("canary" in warning for warning in verdict["warnings"])


def test_an_unbudgeted_canary_that_gets_worse_is_a_warning_and_withholds_the_recommendation(tmp_path, capsys):
    """"Recommended: yes" above "Warning: `canary` is worse ... on 5 of 5 seeds" would undercut
    itself: with no budget to say whether that rise is acceptable, the recipe is not recommended."""
    scores = write_table(planted_tables(seeds=5), tmp_path / "scores.parquet")
    assert repro.main(["--from-scores", str(scores), "--resamples", "300", "--require", "recommended"]) == repro.EXIT_GATE_FAILED
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["verdict"] == "stable gain" and verdict["budgets"] == {} and verdict["recommended"] is False
    reason = "`canary` got worse on most seeds and has no budget to say whether that is acceptable (--max-wer-increase canary=INCREASE)"
    assert verdict["recommendation"] == f"no ({reason})"
    out, err = capsys.readouterr()
    assert f"Recommended: no ({reason})\nWarning: `canary` is worse with the adapter on 5 of 5 seeds" in out
    assert f"--require recommended: no ({reason})" in err
    flat = write_table(planted_tables(0.0, seeds=5), tmp_path / "flat" / "scores.parquet")  # the canary unchanged
    assert repro.main(["--from-scores", str(flat), "--resamples", "300", "--require", "recommended"]) == 0
    assert json.loads((tmp_path / "flat" / "verdict.json").read_text())["recommendation"] == "yes (a stable gain, no eval set has a budget)"


def test_a_stable_gain_on_fewer_than_five_seeds_is_not_recommended(tmp_path, capsys):
    """Every seed improving is a sign test with p = 2^-S: 3 seeds (p = 0.125) cannot back a
    recommendation, though the verdict rules still call it a stable gain."""
    scores = write_table(planted_tables(0.0, seeds=3), tmp_path / "scores.parquet")
    assert repro.main(["--from-scores", str(scores), "--resamples", "300", "--require", "recommended"]) == 1
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["verdict"] == "stable gain" and verdict["recommended"] is False
    assert "- Recommended: no (3 seeds: a recommendation needs at least 5 (--trials 5))" in (tmp_path / "report.md").read_text()
    assert verdict["recommendation"] == "no (3 seeds: a recommendation needs at least 5 (--trials 5))"
    assert f"Recommended: {verdict['recommendation']}" in capsys.readouterr().out  # printed, not only in report.md
    one = write_table(planted_tables(seeds=1), tmp_path / "one" / "scores.parquet")
    repro.main(["--from-scores", str(one), "--resamples", "300"])
    sentence = json.loads((tmp_path / "one" / "verdict.json").read_text())["sentence"]
    assert "over 1 seed (" in sentence and " sd)" not in sentence  # one seed has no spread to report


@pytest.mark.parametrize("flag, message", [
    ("nope=0.02", "--max-wer-increase: no eval set 'nope' is scored (scored: heldout, canary)"),
    ("heldout=0.02", "--max-wer-increase: 'heldout' is the eval set the gain is tested on"),
    ("canary=2", "--max-wer-increase.canary: a WER increase between 0 and 1"),
    ("canary", "--max-wer-increase 'canary': expected NAME=INCREASE"),
])
def test_bad_budget_flags_exit_2_naming_the_problem(tmp_path, capsys, flag, message):
    scores = write_table(planted_tables(seeds=2), tmp_path / "scores.parquet")
    assert repro.main(["--from-scores", str(scores), "--max-wer-increase", flag]) == repro.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not (tmp_path / "verdict.json").exists()


@pytest.mark.parametrize("require, canary_shift, expected, unmet", [
    ("stable-gain", -0.3, 0, []),
    ("stable-gain,within-budget", -0.1, 0, []),
    ("stable-gain,within-budget", -0.3, 1, ["--require within-budget: canary is 'over budget'"]),
    ("within-budget", -0.3, 1, ["--require within-budget: canary is 'over budget'"]),
    ("within-budget,stable-gain", -0.1, 0, []),
    ("recommended", -0.1, 0, []),
    ("recommended", -0.3, 1, ["--require recommended: no (`canary` is over budget)"]),
])
def test_require_takes_a_comma_list_and_fails_on_any_unmet(tmp_path, capsys, require, canary_shift, expected, unmet):
    scores = write_table(planted_tables(canary_shift), tmp_path / "scores.parquet")
    code = repro.main(["--from-scores", str(scores), "--resamples", "500", "--max-wer-increase", "canary=0.02", "--require", require])
    assert code == expected
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("--require")] == unmet


def test_require_within_budget_without_a_budget_fails(tmp_path, capsys):
    scores = write_table(planted_tables(seeds=2), tmp_path / "scores.parquet")
    assert repro.main(["--from-scores", str(scores), "--resamples", "300", "--require", "within-budget"]) == repro.EXIT_GATE_FAILED
    assert "--require within-budget: no eval set has a budget" in capsys.readouterr().err


def test_require_refuses_an_unknown_requirement():
    result = run_cli("--from-scores", "x.parquet", "--require", "stable-gain,cheap")
    assert result.returncode == 2 and "expected one or more of stable-gain, within-budget" in result.stderr


# --------------------------------------------------------------------------- confirm set and selection bias


def write_run_json(directory: Path, selected: dict | None, eval_manifests: list) -> None:
    (directory / "run.json").write_text(json.dumps({"name": "demo", "selected_on": selected, "eval_manifests": eval_manifests}))


@pytest.mark.parametrize("tested, selected, bias", [
    ("heldout", {"name": "heldout", "path": "/d/heldout.jsonl"}, True),     # confirmed on the select set
    ("heldout", {"name": "dev", "path": "/d/heldout.jsonl"}, True),         # the same manifest under another name
    ("heldout", {"name": "dev", "path": "/d/dev.jsonl"}, False),            # an untouched set
    ("heldout", None, None),                                                # no sweep: not known
])
def test_selection_bias_is_in_the_headline_and_verdict(tmp_path, capsys, tested, selected, bias):
    scores = write_table(planted_tables(0.0, seeds=5), tmp_path / "scores.parquet")  # the canary unchanged
    write_run_json(tmp_path, selected, [["heldout", "/d/heldout.jsonl"], ["canary", "/d/canary.jsonl"]])
    assert repro.main(["--from-scores", str(scores), "--resamples", "300", "--output-dir", str(tmp_path / "out")]) == 0
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["selection_bias"] is bias
    assert verdict["selected_on"] == selected and verdict["confirmed_on"] == {"name": "heldout", "path": "/d/heldout.jsonl"}
    biased = "Stable gain on heldout, the set the sweep selected this recipe on, so the gain is biased upward (winner's curse"
    assert verdict["sentence"].startswith(biased) is bool(bias)
    assert verdict["sentence"].startswith("Stable gain on heldout, which the sweep did not select on (it selected on dev): ") is (bias is False)
    assert verdict["sentence"].startswith("Stable gain on heldout: ") is (bias is None)
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"**{verdict['sentence']}**" in report
    # Selection is not confirmation: a stable gain on the select set is not recommended, and the report says why.
    assert verdict["recommended"] is (not bias)
    gate = repro.main(["--from-scores", str(scores), "--resamples", "300", "--output-dir", str(tmp_path / "gate"), "--require", "recommended"])
    assert gate == (repro.EXIT_GATE_FAILED if bias else 0)
    assert ("`heldout` is the set the sweep selected it on: confirm on an untouched set" in report) is bool(bias)
    assert verdict["sentence"] in capsys.readouterr().out


def test_confirm_on_with_from_scores_is_refused(tmp_path, capsys):
    scores = write_table(planted_tables(seeds=2), tmp_path / "scores.parquet")
    assert repro.main(["--from-scores", str(scores), "--confirm-on", "test=t.jsonl"]) == repro.EXIT_BAD_INPUT
    assert "with --from-scores, pick a stored eval set with --eval-set" in capsys.readouterr().err


def fake_seed_runs(errors_by_set: dict[str, tuple[int, int]], utterances: int = 60):
    """A stand-in for run_all_seeds: every seed scores each eval set of its config with the
    planted (baseline, tuned) errors per 10-word utterance, and records which sets it scored
    (and, in ``run_all_seeds.job_names``, the Ray job name of each call)."""
    scored = []

    def run_all_seeds(runs, address, cpus, gpus, job_name=""):
        run_all_seeds.job_names.append(job_name)
        finished = []
        for seed, rerun, config in runs:
            scored.append([list(pair) for pair in config.eval_manifests])
            rows = [{"seed": seed, "system": system, "eval_set": name, "utterance_id": f"{name}{i}", "speaker": "",
                     "ref_words": 10, "errors": errors_by_set[name][system == "tuned"] if i % 2 else 1,
                     "reference": "r", "hypothesis": f"{system} {name} {i}"}
                    for name, _ in config.eval_manifests for system in ("baseline", "tuned") for i in range(utterances)]
            finished.append({"rows": rows, "seed": seed, "rerun": rerun, "steps": 1, "elapsed_seconds": 0.0, "device": "cpu",
                             "node": None, "output_dir": config.output_dir})
        return finished, []

    run_all_seeds.job_names = []
    return run_all_seeds, scored


def write_best(path: Path, **keys) -> Path:
    """A best.json whose manifests (one row of real audio each) are under data/ beside it:
    repro checks their rows before any seed runs, and the tests run from that folder."""
    config = TrialConfig(seed=42, eval_manifests=(("dev", "data/dev.jsonl"), ("canary", "data/canary.jsonl"))).to_dict()
    write_tone(path.parent / "data" / "tone.wav", 0.5, 330, seed=1)
    for name in ("dev", "canary", "test", "other"):
        write_manifest(path.parent / "data" / f"{name}.jsonl", [{"audio_filepath": "tone.wav", "text": "red lamp"}])
    path.write_text(json.dumps({"config": config, "sweep": "demo", **keys}))
    return path


def test_repro_of_a_best_json_scores_its_confirm_set_in_place_of_the_select_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake, scored = fake_seed_runs({"test": (3, 1), "canary": (1, 1), "dev": (3, 0)})
    monkeypatch.setattr(repro, "run_all_seeds", fake)
    best = write_best(tmp_path / "best.json", select_on="dev", confirm_on={"name": "test", "path": "data/test.jsonl"},
                      max_wer_increase={"canary": 0.02}, selection_seeds=[42, 43, 1042])
    out = tmp_path / "repro"
    assert repro.main(["--config", str(best), "--trials", "3", "--output-dir", str(out), "--resamples", "300"]) == 0
    assert [[name for name, _ in sets] for sets in scored] == [["test", "canary"]] * 4  # 3 seeds and a rerun; dev is not scored
    assert scored[0][0][1] == str(Path("data/test.jsonl").absolute())
    verdict = json.loads((out / "verdict.json").read_text())
    assert [s["seed"] for s in verdict["seeds"]] == [44, 45, 46]  # 43 was a selection seed
    assert verdict["eval_set"] == "test" and verdict["selection_bias"] is False
    assert verdict["selected_on"] == {"name": "dev", "path": str(Path("data/dev.jsonl").absolute())}
    assert verdict["confirmed_on"]["name"] == "test" and verdict["budgets"]["canary"]["decision"] == "within budget"
    assert verdict["sentence"].startswith("Stable gain on test, which the sweep did not select on (it selected on dev): ")
    run = json.loads((out / "run.json").read_text())
    assert run["selection_seeds"] == [42, 43, 1042] and run["max_wer_increase"] == {"canary": 0.02}


def test_a_best_json_without_a_confirm_set_is_confirmed_on_its_select_set_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake, scored = fake_seed_runs({"dev": (3, 1), "canary": (1, 1)})
    monkeypatch.setattr(repro, "run_all_seeds", fake)
    best = write_best(tmp_path / "best.json", eval_wer=0.1)  # an older best.json: no select_on, confirm_on, selection_seeds
    assert repro.main(["--config", str(best), "--trials", "2", "--output-dir", str(tmp_path / "r"), "--resamples", "300"]) == 0
    assert [name for name, _ in scored[0]] == ["dev", "canary"]
    verdict = json.loads((tmp_path / "r" / "verdict.json").read_text())
    assert verdict["selection_bias"] is True and "so the gain is biased upward (winner's curse" in verdict["sentence"]


def test_confirm_on_flag_overrides_best_json_and_works_for_a_plain_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake, scored = fake_seed_runs({"test": (3, 1), "other": (3, 1), "canary": (1, 1)})
    monkeypatch.setattr(repro, "run_all_seeds", fake)
    best = write_best(tmp_path / "best.json", select_on="dev", confirm_on={"name": "test", "path": "data/test.jsonl"})
    argv = ["--trials", "1", "--determinism-reruns", "0", "--resamples", "300", "--confirm-on", "other=data/other.jsonl"]
    assert repro.main(["--config", str(best), "--output-dir", str(tmp_path / "a"), *argv]) == 0
    assert json.loads((tmp_path / "a" / "verdict.json").read_text())["selection_bias"] is False
    plain = tmp_path / "recipe.json"
    TrialConfig(eval_manifests=(("test", "data/test.jsonl"), ("canary", "data/canary.jsonl"))).to_json(plain)
    assert repro.main(["--config", str(plain), "--output-dir", str(tmp_path / "b"), *argv]) == 0
    assert [[name for name, _ in sets] for sets in scored] == [["other", "canary"], ["other", "canary"]]
    assert json.loads((tmp_path / "b" / "verdict.json").read_text())["selection_bias"] is None
    # The Ray job is named after the recipe: a sweep's best.json by its sweep (folder), a recipe file by its name.
    assert fake.job_names == [f"repro {tmp_path.name}", "repro recipe"]


def test_a_sweep_yaml_recipe_is_confirmed_on_its_confirm_set_within_its_budgets(tmp_path, monkeypatch):
    """``--config sweep.yaml`` reruns its ``trial:`` recipe: on the YAML's confirm_on set, with
    its max_wer_increase, and no selection is claimed (no sweep chose that recipe)."""
    import yaml

    monkeypatch.chdir(tmp_path)
    fake, scored = fake_seed_runs({"test": (3, 1), "canary": (1, 1)})
    monkeypatch.setattr(repro, "run_all_seeds", fake)
    write_best(tmp_path / "best.json")  # for its manifests under data/
    sweep = {"name": "s", "trial": {"eval_manifests": {"dev": "data/dev.jsonl", "canary": "data/canary.jsonl"}},
             "search": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
             "confirm_on": {"test": "data/test.jsonl"}, "max_wer_increase": {"canary": 0.02}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    argv = ["--config", "sweep.yaml", "--trials", "1", "--determinism-reruns", "0", "--resamples", "300", "--output-dir", "out"]
    assert repro.main(argv) == 0
    assert [[name for name, _ in sets] for sets in scored] == [["test", "canary"]]
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["confirmed_on"]["name"] == "test" and verdict["selection_bias"] is None
    assert list(verdict["budgets"]) == ["canary"] and verdict["budgets"]["canary"]["limit"] == 0.02


def test_a_budget_on_a_set_the_seeds_do_not_score_stops_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(repro, "run_all_seeds", lambda *a: pytest.fail("no seed may run"))
    best = write_best(tmp_path / "best.json", select_on="dev", max_wer_increase={"source": 0.02})
    assert repro.main(["--config", str(best), "--output-dir", str(tmp_path / "r")]) == repro.EXIT_BAD_INPUT
    assert f"{best}: max_wer_increase: no eval set 'source' is scored (scored: dev, canary)" in capsys.readouterr().err


def test_repro_removes_the_staging_folders_of_seeds_killed_mid_write_before_its_seeds_start(tmp_path, monkeypatch, capsys):
    """A seed killed (kill -9, lost node) while writing its outputs leaves its staging folder in
    the repro folder; the next repro removes it, in one printed line, before any seed starts,
    and keeps one whose process still runs here and one made on another host."""
    import socket

    monkeypatch.chdir(tmp_path)
    host = socket.gethostname()
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait(timeout=30)  # its pid now names no process
    out = tmp_path / "repro"
    abandoned = out / f".seed_43.{killed.pid}@{host}.staging"
    (abandoned / "lora_adapter").mkdir(parents=True)
    kept = [out / f".seed_44.{os.getpid()}@{host}.staging", out / f".seed_45.{killed.pid}@another-node.staging"]
    for folder in kept:
        folder.mkdir()
    left_before_seeds = []

    def run_all_seeds(*args, **kwargs):
        left_before_seeds.extend(sorted(p.name for p in out.iterdir() if p.name.endswith(".staging")))
        return fake(*args, **kwargs)

    fake, _ = fake_seed_runs({"dev": (3, 1), "canary": (1, 1)})
    monkeypatch.setattr(repro, "run_all_seeds", run_all_seeds)
    best = write_best(tmp_path / "best.json")
    assert repro.main(["--config", str(best), "--trials", "1", "--determinism-reruns", "0", "--output-dir", "repro",
                       "--resamples", "300"]) == 0
    assert left_before_seeds == sorted(folder.name for folder in kept)
    assert (f"repro: removed 1 staging folder in repro left by a process no longer running on this host "
            f"(killed while writing its outputs): {abandoned.name}\n") in capsys.readouterr().out


def test_sclite_on_repros_trn_files_gives_each_seeds_totals(tmp_path, sclite_totals):
    """scores.parquet rows of two seeds, scored by the project's scorer, exported per seed and system."""
    from trainable.wer import score_as_dict, score_corpus

    references = ["Mr. Smith paid $5 on Thursday!", "the colour of the sea", "", "go north", "a b c"]
    hypotheses = {(0, "baseline"): ["mister smith paid five dollars thursday", "the color of the see", "uh", "", "a b c"],
                  (0, "tuned"): ["mister smith paid $5 on thursday", "the color of a sea", "", "go north", "a b c d"],
                  (1, "baseline"): ["mister smith paid five dollars thursday", "the color of the see", "uh", "", "a b c"],
                  (1, "tuned"): ["smith paid on thursday", "the colour of the sea", "", "go", "a b"]}
    rows = []
    for (seed, system), texts in hypotheses.items():
        _, scores = score_corpus(references, texts)
        rows += [{"seed": seed, "system": system, "eval_set": "test", "utterance_id": f"u-{i}", "speaker": ["a-1", "a-1", "b", None, "b"][i],
                  "reference": r, "hypothesis": h, **score_as_dict(score)} for i, (r, h, score) in enumerate(zip(references, texts, scores))]
    table = pd.DataFrame(rows)
    scores = write_table(table, tmp_path / "scores.parquet")
    assert repro.main(["--from-scores", str(scores), "--resamples", "200"]) == 0
    for (seed, system), group in table.groupby(["seed", "system"]):
        totals = sclite_totals(tmp_path / "trn" / "test_reference.trn", tmp_path / "trn" / f"test_seed{seed}_{system}.trn")
        assert (totals["words"], totals["errors"]) == (group["ref_words"].sum(), group[group["ref_words"] > 0]["errors"].sum())
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["cer"]["seeds"] == [0, 1]
    # seed 0 turned "the see" into "a sea", seed 1 lost "mister", "$5" and "c"
    assert verdict["error_analysis"]["words_broken"] == [{"word": w, "count": 1} for w in ("$5", "c", "mister", "the")]
    assert verdict["error_analysis"]["words_fixed"] == [{"word": "go", "count": 2}, {"word": "on", "count": 2},
                                                        {"word": "sea", "count": 2}, {"word": "north", "count": 1}]


def test_wer_figures_that_round_to_zero_print_without_a_minus_sign():
    from sweeps.repro.report import percent, points

    assert (points(-0.00001), points(-0.00001, sign=True), percent(-0.0)) == ("0.00", "+0.00", "0.00%")
    assert (points(-0.0123, sign=True), points(0.0123, sign=True)) == ("-1.23", "+1.23")


def test_the_row_check_before_ray_reads_local_data_and_leaves_hub_datasets_to_the_seeds(tiny_config, monkeypatch):
    import trainable.data_report as data_report

    read = []
    original = data_report.read_source
    monkeypatch.setattr(data_report, "read_source", lambda spec: read.append(spec) or original(spec))
    config = tiny_config.replace(eval_manifests=(*tiny_config.eval_manifests, ("hub", "someorg/speech:test"))).resolved()
    repro.check_rows_here(config)
    assert read == [config.train_manifest, *[path for name, path in config.eval_manifests if name != "hub"]]


def _verdict_from(table: pd.DataFrame, tmp_path: Path, *flags: str) -> dict:
    scores = write_table(table, tmp_path / "scores.parquet")
    repro.main(["--from-scores", str(scores), "--resamples", "1000", "--output-dir", str(tmp_path / "out"), *flags])
    return json.loads((tmp_path / "out" / "verdict.json").read_text())


def test_the_headline_gives_the_rule_that_decided_the_verdict(tmp_path):
    """A seed with no gain keeps a CI above 0 from being a stable gain: the reason must say
    that, not 'the CI includes 0'."""
    flat = _verdict_from(shifted_table([0.1, 0.1, 0.1, 0.1, 0.0]), tmp_path / "flat")
    assert flat["verdict"] == "no significant change" and flat["ci"][0] > 0
    assert flat["verdict_rule"] == "seed_not_improved"
    assert flat["sentence"].rstrip(".").endswith("the CI lies above 0, but seed 4 did not improve")
    rng = np.random.default_rng(1)
    baseline = np.full(300, 3)
    gains = [baseline - (rng.random(300) < 0.3) for _ in range(4)]  # seeds 0-3: a clear gain
    mixed = baseline - (rng.random(300) < 0.10) + (rng.random(300) < 0.13)  # seed 4: a little worse, CI across 0
    against = _verdict_from(table_from_errors(baseline, np.array([*gains, mixed]), np.full(300, 10)), tmp_path / "against")
    assert against["verdict"] == "unstable" and against["seeds"][4]["delta"] < 0 < against["seeds"][4]["ci"][1]
    assert "the CI excludes 0 but seed 4 went the other way" in against["sentence"]
    assert against["verdict_rule"] == "opposite_seed"
    noisy = _verdict_from(noisy_table(), tmp_path / "noisy")
    assert noisy["verdict"] == "no significant change" and "; the CI includes 0." in noisy["sentence"]
    assert noisy["verdict_rule"] == "ci_includes_0"


def test_one_utterance_cannot_make_a_gain_or_a_budget_certain(tmp_path):
    """A bootstrap over one utterance has no spread: CI [+10, +10]. Too few units to resample."""
    one = pd.concat([table_from_errors(np.array([3]), np.array([[2]] * 5), np.array([10])),
                     table_from_errors(np.array([1]), np.array([[1]] * 5), np.array([10]), eval_set="canary")])
    verdict = _verdict_from(one, tmp_path, "--max-wer-increase", "canary=0")
    assert verdict["verdict"] == "stable gain" and verdict["ci"] == [0.1, 0.1]
    assert verdict["underpowered"] is True and "1 held-out utterance < 10, too few to resample" in verdict["underpowered_reasons"]
    assert verdict["budgets"]["canary"]["decision"] == "inconclusive" and verdict["recommended"] is False
    assert verdict["budgets"]["canary"]["needed"] == "Too few held-out utterances to resample: at least 10 (now 1)."


def test_a_perfect_baseline_points_to_an_absolute_minimum_effect(tmp_path):
    """From a baseline WER of 0 a relative minimum effect is 0 whatever --min-effect says."""
    rng = np.random.default_rng(3)
    tuned = (rng.random((5, 40)) < 0.05).astype(int)
    verdict = _verdict_from(table_from_errors(np.zeros(40, dtype=int), tuned, np.full(40, 10)), tmp_path)
    assert verdict["baseline_wer"] == 0 and "--min-effect-abs" in verdict["needed"]


def test_a_sweep_yaml_confirm_set_without_a_path_is_refused_before_any_seed(tmp_path, monkeypatch, capsys):
    """YAML reads `{test:data/test.jsonl}` (no space) as a name without a path: the same refusal
    the sweep gives, not a run on a manifest called 'None'."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(repro, "run_all_seeds", lambda *a: pytest.fail("no seed may run"))
    (tmp_path / "sweep.yaml").write_text("name: s\ntrial: {max_steps: 5}\nconfirm_on: {test:data/test.jsonl}\n")
    assert repro.main(["--config", "sweep.yaml", "--trials", "1"]) == repro.EXIT_BAD_INPUT
    assert "sweep.yaml: confirm_on.test:data/test.jsonl: expected a manifest path, got None" in capsys.readouterr().err


@pytest.mark.parametrize("keys, holds", [
    ({"unfinished": 2, "resume": "python -m sweeps.run --resume --name demo", "note": "race unfinished"}, "holds no winner yet"),
    ({"unfinished": 1, "resume": "python -m sweeps.run --resume --name demo", "trial_id": "t1"}, "its best recipe so far"),
])
def test_repro_refuses_the_best_json_of_an_unfinished_sweep(tmp_path, monkeypatch, capsys, keys, holds):
    """An interrupted sweep's best.json ("complete": false) is not its winner: exit 2 naming
    the file and the command that finishes the sweep, before any seed runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(repro, "run_all_seeds", lambda *a, **k: pytest.fail("no seed may run"))
    best = write_best(tmp_path / "results" / "demo" / "best.json", complete=False, **keys)
    if "trial_id" not in keys:  # while the race is unfinished, best.json holds no recipe
        data = json.loads(best.read_text())
        del data["config"]
        best.write_text(json.dumps(data))
    for argv in (["--config", str(best)], ["--sweep", "demo"], []):
        assert repro.main([*argv, "--trials", "2"]) == repro.EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert "best.json: sweep 'demo' is unfinished" in err and holds in err
        assert "Finish it with: python -m sweeps.run --resume --name demo, then run repro again" in err
    check_sweep_finished(read_recipe_file(write_best(best, complete=True)))  # a finished sweep's best.json is accepted
    check_sweep_finished(read_recipe_file(write_best(best)))  # and one written before "complete" existed


def test_repro_takes_recipe_and_choice_from_one_reading_of_a_best_json_the_sweep_rewrites(tmp_path, monkeypatch):
    """A sweep still finishing its race rewrites best.json while repro starts: here after every
    read of it. Whether the sweep finished, the recipe and the sweep's choice must all come from
    the version repro read first, never a recipe of one version with the seeds of another."""
    monkeypatch.chdir(tmp_path)
    fake, _ = fake_seed_runs({"dev": (3, 1), "canary": (1, 1)})
    monkeypatch.setattr(repro, "run_all_seeds", fake)
    best = write_best(tmp_path / "best.json", complete=True, select_on="dev", selection_seeds=[42, 43])
    first = json.loads(best.read_text())
    later = [{**first, "config": {**first["config"], "lora_r": r}, "selection_seeds": [42, 43, 44 + i]} for i, r in enumerate((16, 32))]
    read_text = Path.read_text

    def read_then_rewrite(path, *args, **kwargs):
        text = read_text(path, *args, **kwargs)
        if path.resolve() == best.resolve() and later:
            best.write_text(json.dumps(later.pop(0)))
        return text

    monkeypatch.setattr(Path, "read_text", read_then_rewrite)
    assert repro.main(["--config", str(best), "--trials", "2", "--determinism-reruns", "0", "--output-dir", "r", "--resamples", "300"]) == 0
    monkeypatch.undo()
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    recipe = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (recipe["lora_r"], run["selection_seeds"]) == (first["config"]["lora_r"], [42, 43])
    assert [entry["seed"] for entry in run["seed_runs"]] == [44, 45]  # past the first version's selection seeds


def test_trainable_run_refuses_a_best_json_that_holds_no_recipe(tmp_path):
    from trainable.config_io import ConfigError, read_recipe

    best = tmp_path / "best.json"
    best.write_text(json.dumps({"sweep": "demo", "complete": False, "note": "The race of finalists is unfinished"}))
    with pytest.raises(ConfigError, match="best.json: holds no recipe: The race of finalists is unfinished"):
        read_recipe(best)
