"""A repro run keeps the seeds an earlier run of the same recipe finished (sweeps.repro.reuse),
and moves an earlier verdict aside before any seed runs.

The seeds train for real (tiny Moonshine, 2 steps) but in this process: ``train_here`` stands in
for ``run_all_seeds``, so these tests need no Ray (test_repro_ray.py runs reuse through Ray).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sweeps.repro import cli as repro
from sweeps.repro import reuse, seeds
from trainable.pipeline import train_and_evaluate

FLAGS = ["--output-dir", "out", "--resamples", "200"]


def train_here(trained: list[tuple[int, bool]], interrupt: bool = False):
    """A stand-in for run_all_seeds that trains each seed run in this process with the real
    trainable and appends (seed, rerun) to ``trained``; ``interrupt`` stops it as Ctrl-C would."""

    def run_all_seeds(runs, address, cpus, gpus, job_name=""):
        if interrupt:
            raise KeyboardInterrupt
        finished = []
        for seed, rerun, config in runs:
            trained.append((seed, rerun))
            summary = train_and_evaluate(config)
            finished.append({**seeds.seed_result(summary, config), "seed": seed, "rerun": rerun, "node": None,
                             "output_dir": config.output_dir})
        return finished, []

    return run_all_seeds


@pytest.fixture
def recipe(tiny_config, tmp_path, monkeypatch) -> Path:
    """The tiny recipe as a file, run from tmp_path (so printed paths are out/seed_<n>)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "tiny.json"
    tiny_config.to_json(path)
    return path


def run_repro(monkeypatch, capsys, recipe: Path, *argv: str, interrupt: bool = False) -> tuple[int, list, str]:
    """(exit status, the seed runs trained, what was printed) of one ``python -m sweeps.repro``."""
    trained: list[tuple[int, bool]] = []
    monkeypatch.setattr(repro, "run_all_seeds", train_here(trained, interrupt))
    status = repro.main(["--config", str(recipe), *FLAGS, *argv])
    return status, trained, capsys.readouterr().out


def test_a_second_repro_with_more_seeds_trains_only_the_new_ones(recipe, monkeypatch, capsys):
    status, trained, _ = run_repro(monkeypatch, capsys, recipe, "--trials", "1", "--determinism-reruns", "0")
    assert status == 0 and trained == [(43, False)]

    status, trained, printed = run_repro(monkeypatch, capsys, recipe, "--trials", "2")
    assert status == 0 and trained == [(44, False), (43, True)]  # seed 43 itself is not trained again
    assert "repro: seed 43 reused (finished earlier in out/seed_43 with the same recipe)" in printed
    assert "repro: moved the earlier verdict, report and scores to out/previous/" in printed
    verdict = json.loads(Path("out/verdict.json").read_text())
    assert [s["seed"] for s in verdict["seeds"]] == [43, 44]
    assert verdict["reused_seed_runs"] == [{"seed": 43, "rerun": False}]
    # A reused seed and a fresh rerun are two trainings: the determinism check compares them.
    assert verdict["determinism"]["reruns"][0]["seed"] == 43 and verdict["deterministic"] == "yes"
    run = json.loads(Path("out/run.json").read_text())
    assert sorted((r["seed"], r["rerun"], r["reused"]) for r in run["seed_runs"]) == [(43, False, True), (43, True, False), (44, False, False)]
    assert "trained now; reused from earlier runs of the same recipe, not counted: seed 43" in Path("out/report.md").read_text()
    # The earlier verdict is kept aside, whole: it covers seed 43 alone and --from-scores reads it.
    assert [s["seed"] for s in json.loads(Path("out/previous/verdict.json").read_text())["seeds"]] == [43]
    assert repro.main(["--from-scores", "out/previous/scores.parquet", "--resamples", "200"]) == 0

    status, trained, printed = run_repro(monkeypatch, capsys, recipe, "--trials", "2")
    assert status == 0 and trained == [] and "repro: all 3 seed runs reused; nothing to train" in printed
    assert "repro: rerun 43 reused (finished earlier in out/seed_43_rerun with the same recipe)" in printed
    verdict = json.loads(Path("out/verdict.json").read_text())
    assert verdict["deterministic"] == "yes" and len(verdict["reused_seed_runs"]) == 3  # both reused: still compared
    assert json.loads(Path("out/run.json").read_text())["wall_seconds"] == 0.0


def test_a_seed_folder_of_another_recipe_trains_again(recipe, monkeypatch, capsys):
    run_repro(monkeypatch, capsys, recipe, "--trials", "1", "--determinism-reruns", "0")
    status, trained, printed = run_repro(monkeypatch, capsys, recipe, "--trials", "1", "--determinism-reruns", "0", "learning_rate=0.002")
    assert status == 0 and trained == [(43, False)]
    assert "repro: seed 43 trains again: out/seed_43 holds another recipe (learning_rate: 0.001 there, 0.002 now)" in printed
    assert json.loads(Path("out/seed_43/summary.json").read_text())["config"]["learning_rate"] == 0.002
    assert json.loads(Path("out/verdict.json").read_text())["reused_seed_runs"] == []


def test_retrain_trains_every_seed_again(recipe, monkeypatch, capsys):
    run_repro(monkeypatch, capsys, recipe, "--trials", "1", "--determinism-reruns", "0")
    status, trained, printed = run_repro(monkeypatch, capsys, recipe, "--trials", "1", "--determinism-reruns", "0", "--retrain")
    assert status == 0 and trained == [(43, False)] and "reused (" not in printed
    assert "repro: --retrain: every seed trains again; 1 earlier seed folder is replaced as its seed finishes" in printed
    assert repro.main(["--from-scores", "out/scores.parquet", "--retrain"]) == repro.EXIT_BAD_INPUT  # trains nothing


def test_an_interrupted_repro_leaves_no_verdict_beside_its_seed_folders(recipe, monkeypatch, capsys):
    run_repro(monkeypatch, capsys, recipe, "--trials", "1", "--determinism-reruns", "0")
    status, _, _ = run_repro(monkeypatch, capsys, recipe, "--trials", "2", interrupt=True)
    assert status == repro.EXIT_INTERRUPTED
    assert not any(Path("out", name).exists() for name in ("verdict.json", "report.md", "scores.parquet", "run.json"))
    assert json.loads(Path("out/previous/verdict.json").read_text())["seeds"][0]["seed"] == 43
    assert len(pd.read_parquet("out/previous/scores.parquet")) > 0
    assert repro.main(["--from-scores", "out/scores.parquet"]) == repro.EXIT_BAD_INPUT
    assert "no such file (the earlier run's scores, set aside when seeds ran again: out/previous/scores.parquet)" in capsys.readouterr().err


def test_a_finished_run_is_compared_on_data_versions_and_device_and_an_unreadable_one_is_trained(tiny_config, tmp_path):
    config = tiny_config.resolved().replace(output_dir=str(tmp_path / "seed_42"))
    assert reuse.finished_run(config, "cpu") == (None, "")  # no folder here (on a cluster: another node's disk)
    train_and_evaluate(config)
    found, why_not = reuse.finished_run(config.replace(num_threads=2, output_dir=str(tmp_path / "seed_42")), "cpu")
    assert found is not None and why_not == "" and found["threads"] == 1 and len(found["rows"]) == 2 * (4 + 3)

    summary_path = tmp_path / "seed_42" / "summary.json"
    summary = json.loads(summary_path.read_text())
    assert reuse.recipe_differences(summary, config, "cuda") == ["device: ran on cpu, would run on cuda now"]
    older = {**summary, "versions": {**summary["versions"], "transformers": "4.0.0"}}
    assert reuse.recipe_differences(older, config, None)[0].startswith("transformers 4.0.0 there, ")
    other_data = {**summary, "manifest_sha256": {**summary["manifest_sha256"], "heldout": "0" * 64}}
    assert reuse.recipe_differences(other_data, config, None) == [
        f"{dict(config.eval_manifests)['heldout']} changed since (SHA-256 000000000000 there, "
        f"{summary['manifest_sha256']['heldout'][:12]} now)"]

    summary_path.write_text("{")  # a folder the driver cannot read as a run: trained again, never an error
    found, why_not = reuse.finished_run(config, "cpu")
    assert found is None and "holds no finished run that can be read here (JSONDecodeError" in why_not
