"""End to end: ``--trials 2`` on a tiny random Moonshine, each seed a Ray task on a local instance.

Each test's Ray driver is a child process (tests/drivers.py: ``python -m sweeps.repro``, or a
short script around ``run_all_seeds``): the test process never starts one (tests/conftest.py
says why).
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from drivers import run_python
from sweeps.repro import cli as repro
from sweeps.repro import seeds

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # each starts a Ray instance: 10 s or more


def test_two_seeds_through_ray_write_scores_verdict_and_report(tiny_config, tmp_path):
    config_path = tmp_path / "tiny.json"
    tiny_config.to_json(config_path)
    out = tmp_path / "repro"
    # A high learning rate for 3 steps moves the random model enough that seeds give different
    # tuned hypotheses, so "the rerun matches" is a real determinism check, not empty == empty.
    argv = ["--config", str(config_path), "--trials", "2", "--output-dir", str(out), "--resamples", "500",
            "--cpus-per-trial", "1", "learning_rate=0.05", "max_steps=3"]
    # A fresh decode cache: one run decodes each baseline, the others read it.
    cache = {"TRAINABLE_DECODE_CACHE": str(tmp_path / "decodes")}
    printed = run_python(["-m", "sweeps.repro", *argv], tmp_path, tmp_path / "repro.log", env=cache)

    table = pd.read_parquet(out / "scores.parquet")
    assert list(table.columns[:9]) == ["seed", "system", "eval_set", "utterance_id", "speaker", "ref_words", "errors", "reference", "hypothesis"]
    assert str(table["seed"].dtype) == "int64" and str(table["errors"].dtype) == "int64"
    # 2 seeds x 2 systems x (4 heldout + 3 canary utterances); baseline rows for every seed.
    assert len(table) == 28
    assert table.groupby(["seed", "system", "eval_set"]).size().to_dict() == {
        (s, system, e): n for s in (43, 44) for system in ("baseline", "tuned") for e, n in (("canary", 3), ("heldout", 4))}
    assert list(dict.fromkeys(table["eval_set"])) == ["heldout", "canary"]  # primary first
    assert set(table["speaker"]) == {"spk0", "spk1", "spk2"}
    tuned = table[table["system"] == "tuned"].pivot(index=["eval_set", "utterance_id"], columns="seed", values="hypothesis")
    assert (tuned[43] != tuned[44]).any(), "different seeds must give different adapters"

    verdict = json.loads((out / "verdict.json").read_text())
    assert {"verdict", "underpowered", "mean_delta", "ci", "poi", "deterministic", "baseline_wer", "tuned_wer_mean",
            "tuned_wer_sd", "seeds"} <= set(verdict)
    assert verdict["underpowered"] is True and "2 seeds < 5" in verdict["underpowered_reasons"][0]
    assert [s["seed"] for s in verdict["seeds"]] == [43, 44]
    assert verdict["deterministic"] == "yes", verdict["determinism"]  # from the rerun
    assert verdict["determinism"]["reruns"][0]["seed"] == 43
    assert list(verdict["other_eval_sets"]) == ["canary"]

    run = json.loads((out / "run.json").read_text())
    assert sorted((r["seed"], r["rerun"]) for r in run["seed_runs"]) == [(43, False), (43, True), (44, False)]
    assert all(r["steps"] == 3 and r["device"] == "cpu" for r in run["seed_runs"]) and not run["failed"]
    # Seeds that share one cached baseline decode cannot show decoding is deterministic: not claimed.
    for eval_set in ("heldout", "canary"):
        assert sorted(r["baseline_decoded_by"][eval_set] for r in run["seed_runs"]) == ["decode cache", "decode cache", "this run"]
    across = verdict["determinism"]["baseline_across_seeds"]
    # 1 of 2 when seed 43's main run decoded it, 2 of 2 when its rerun did
    assert across["checked"] is False and re.search(r"[12] of 2 seeds read their baseline from the decode cache", across["why"])
    assert "baseline across seeds not checked" in verdict["determinism"]["detail"]
    assert (out / "seed_43" / "heldout_tuned.json").is_file() and (out / "seed_43_rerun" / "summary.json").is_file()
    assert json.loads((out / "config.json").read_text())["max_steps"] == 3

    assert verdict["selection_bias"] is None and verdict["budgets"] == {}  # a plain recipe: no select set, no budget
    assert verdict["cer"]["seeds"] == [43, 44] and verdict["error_analysis"]["seeds"] == 2
    assert {"heldout_reference.trn", "heldout_seed44_tuned.trn", "canary_seed43_baseline.trn"} <= {p.name for p in (out / "trn").iterdir()}

    report = (out / "report.md").read_text()
    assert verdict["sentence"] in report and "Deterministic: yes" in report and "| `learning_rate` | 0.05 |" in report
    assert "## Error analysis (heldout, 2 seeds pooled)" in report
    for plot in ("seed_deltas.png", "mean_delta_bootstrap.png"):
        assert (out / plot).stat().st_size > 1000
    assert verdict["sentence"] in printed

    # The same command asked for a third seed reuses the finished seed folders and trains seed 45 alone.
    printed = run_python(["-m", "sweeps.repro", *argv, "--trials", "3"], tmp_path, tmp_path / "again.log", env=cache)
    assert "repro: seed 44 reused (finished earlier in repro/seed_44 with the same recipe)" in printed  # relative to the cwd
    assert "repro: rerun 43 reused" in printed and "repro: seed 45 done" in printed
    assert re.findall(r"repro: (?:seed|rerun) \d+ done", printed) == ["repro: seed 45 done"]
    again = json.loads((out / "verdict.json").read_text())
    assert [s["seed"] for s in again["seeds"]] == [43, 44, 45] and again["deterministic"] == "yes"
    assert again["reused_seed_runs"] == [{"seed": 43, "rerun": False}, {"seed": 43, "rerun": True}, {"seed": 44, "rerun": False}]
    assert json.loads((out / "previous" / "verdict.json").read_text()) == verdict  # the 2-seed verdict, set aside whole


FAILING_SEED = """
import json, sys
from sweeps.repro.seeds import run_all_seeds
from trainable.config import TrialConfig

def fake_seed(config):  # no model: seed 2 fails as a trainer would, the others return a row
    if config["seed"] == 2:
        raise RuntimeError("corrupt audio in heldout.jsonl line 3")
    return {"rows": [{"seed": config["seed"]}], "steps": 1, "elapsed_seconds": 0.0, "device": "cpu", "node": None}

runs = [(seed, False, TrialConfig(seed=seed, output_dir=f"{sys.argv[1]}/seed_{seed}")) for seed in (1, 2, 3)]
finished, failed = run_all_seeds(runs, None, 0.5, 0, task_fn=fake_seed)
sys.stdout.write("RESULT " + json.dumps({"finished": sorted(run["seed"] for run in finished), "failed": failed}) + "\\n")
"""


def test_a_failing_seed_is_recorded_and_the_others_finish(tmp_path):
    printed = run_python(["-c", FAILING_SEED, str(tmp_path)], tmp_path, tmp_path / "seeds.log")
    result = json.loads(next(line for line in printed.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert result["finished"] == [1, 3]
    assert result["failed"] == [{"seed": 2, "kind": "seed", "error": "RuntimeError: corrupt audio in heldout.jsonl line 3",
                                 "output_dir": str(tmp_path / "seed_2")}]
    with pytest.raises(repro.ReproError, match="every seed run failed"):
        seeds.scores_table([], ["heldout"])
