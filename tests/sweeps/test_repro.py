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

from sweeps.repro import cli as repro
from sweeps.repro import seeds
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
    assert verdict["deterministic"] == "yes"  # baselines identical, no rerun stored
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
    config = repro.load_config(best, ["max_steps=50", "trial.learning_rate=3e-4", "target_modules=qv"])
    assert (config.max_steps, config.learning_rate, config.target_modules, config.lora_r) == (50, 3e-4, ("q_proj", "v_proj"), 4)
    with pytest.raises(repro.ReproError, match="unknown config field"):
        repro.load_config(best, ["max_stepz=5"])
    with pytest.raises(repro.ReproError, match="override seed: set per seed by repro; use --seeds"):
        repro.load_config(best, ["seed=3"])
    with pytest.raises(repro.ReproError, match="is not KEY=VALUE"):
        repro.load_config(best, ["max_steps"])
    yaml_config = tmp_path / "sweep.yaml"
    yaml_config.write_text("name: x\ntrial:\n  max_steps: 7\n  lora_r: 2\n")
    assert repro.load_config(yaml_config, []).max_steps == 7


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


def test_seeds_avoid_the_sweeps_own_seed_unless_given():
    parse = repro.build_parser().parse_args
    assert repro.choose_seeds(parse(["--trials", "3"]), 42) == [43, 44, 45]
    assert repro.choose_seeds(parse(["--seeds", "7,1,9"]), 42) == [7, 1, 9]
    with pytest.raises(repro.ReproError, match="distinct"):
        repro.choose_seeds(parse(["--seeds", "1,1"]), 42)
    with pytest.raises(repro.ReproError, match="at least 1"):
        repro.choose_seeds(parse(["--trials", "0"]), 42)


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
    assert same == [{"seed": 1, "identical": True, "differing": 0, "examples": [], "devices": [None, None], "nodes": [None, None]}]
    differs = seeds.rerun_checks([run(1, False, ["a", "b"]), run(1, True, ["a", "x"])])
    assert differs[0]["identical"] is False and differs[0]["examples"] == ["heldout/tuned/u1"]
    baseline_ok = {"checked": True, "identical": True, "count": 0}
    assert seeds.determinism_summary(baseline_ok, same)["deterministic"] == "yes"
    assert seeds.determinism_summary(baseline_ok, differs)["deterministic"] == "no"
    assert seeds.determinism_summary({"checked": True, "identical": False, "count": 3}, same)["deterministic"] == "no"
    assert seeds.determinism_summary({"checked": False}, [])["deterministic"] == "unknown"
    elsewhere = [{**differs[0], "devices": ["cuda", "cpu"]}]
    assert "(ran on cuda then cpu)" in seeds.determinism_summary({"checked": False}, elsewhere)["detail"]


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


@pytest.mark.parametrize("budget, warned", [(0.05, True), (0.2, False)])
def test_the_sweeps_canary_budget_is_checked_on_every_seed(tmp_path, capsys, budget, warned):
    """best.json's max_wer_increase travels in run.json; every seed over it is reported."""
    scores = write_table(pd.concat([
        shifted_table([0.5, 0.45, 0.55], speakers=12),
        table_from_errors(np.array([1, 2]), np.array([[2, 2]] * 3), np.array([4, 4]), eval_set="canary"),  # +12.5 points
    ]), tmp_path / "scores.parquet")
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"config": {}, "max_wer_increase": {"canary": budget}}))
    (tmp_path / "run.json").write_text(json.dumps({"name": "demo", "max_wer_increase": repro.wer_budgets(best)}))
    repro.main(["--from-scores", str(scores), "--resamples", "300", "--output-dir", str(tmp_path / "out")])
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    report = (tmp_path / "out" / "report.md").read_text()
    assert verdict["max_wer_increase"] == {"canary": budget}
    line = f"`canary` rose past the sweep's budget of +{100 * budget:.2f} WER points on 3 of 3 seeds (worst +12.50)"
    assert (line in report) is warned and bool(verdict["budget_warnings"]) is warned
    printed = capsys.readouterr().out
    assert (f"Warning: {line}" in printed) is warned and "Warning: `canary` is worse with the adapter on 3 of 3 seeds" in printed
