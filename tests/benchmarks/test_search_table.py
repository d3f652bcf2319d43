"""The search-table builder: its grid and generated sweeps (fast), and a real build on the
tiny random Moonshine through sweeps.run on Ray, interrupted and resumed (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks import search_table as builder
from sweeps.search.config import SweepConfig
from trainable.config import REPO_ROOT


def load(path: Path = builder.DEFAULT_CONFIG, *overrides: str):
    return builder._load_sweep(str(path), list(overrides))


def test_the_demo_grid_covers_every_choice_and_a_log_grid_of_learning_rates():
    base = load()
    grid = builder.default_grid(base, range_points=4)
    assert list(grid) == list(base.searched_names)
    assert grid["learning_rate"] == [5e-4, 1e-3, 2e-3, 4e-3]  # log-spaced over demo.yaml's 5e-4 .. 4e-3
    for param in base.search:
        if param.kind == "choice":
            assert grid[param.name] == list(param.choices)
    assert len(builder.grid_recipes(grid)) == 4 * 3 * 3 * 2 >= 64  # lr x rank x alpha x {fc, qkvo+fc}


def test_a_grid_is_a_sweep_of_its_points_with_the_demo_trial_and_budget():
    base = load()
    grid = builder.default_grid(base, range_points=3)
    recipes = builder.grid_recipes(grid)
    raw = builder.sweep_for(base, "t-grid", grid, recipes)
    sweep = SweepConfig.from_dict(raw)
    assert sweep.num_samples == len(recipes) == len(sweep.points_to_evaluate)
    assert [dict(p) for p in sweep.points_to_evaluate] == recipes
    assert sweep.scheduler.kind == "none" and dict(sweep.max_wer_increase) == {"canary": 0.02}
    assert (sweep.trial.eval_every, sweep.trial.max_steps, sweep.trial.seed) == (base.trial.eval_every, base.trial.max_steps, base.trial.seed)
    assert Path(sweep.trial.model).is_absolute()
    seeds = builder.sweep_for(base, "t-seeds", {**grid, "seed": [43, 44]}, [{**recipes[0], "seed": 43}])
    assert SweepConfig.from_dict(seeds).points_to_evaluate[0]["seed"] == 43


def test_eval_roles_come_from_the_sweep_not_from_names():
    base = load(builder.DEFAULT_CONFIG, "trial.eval_manifests={dev: data/demo/heldout.jsonl, forget: data/demo/canary.jsonl}",
                "max_wer_increase={forget: 0.03}")
    assert builder.eval_roles(base, None) == ("dev", "forget", 0.03)
    with pytest.raises(builder.BuildError, match="no max_wer_increase"):
        builder.eval_roles(base, "dev")
    with pytest.raises(builder.BuildError, match="--canary-set"):
        builder.eval_roles(load(builder.DEFAULT_CONFIG, "max_wer_increase=null"), None)


def test_a_grid_file_must_name_every_searched_field(tmp_path):
    base = load()
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"learning_rate": [1e-3], "lora_r": [8]}))
    with pytest.raises(builder.BuildError, match="each searched field"):
        builder.read_grid(str(path), base)
    path.write_text(yaml.safe_dump({"target_modules": ["fc"], "lora_alpha": [16], "lora_r": [8], "learning_rate": [1e-3]}))
    assert list(builder.read_grid(str(path), base)) == list(base.searched_names)


def test_a_results_row_maps_to_the_tables_columns():
    trial = {"trial_id": "a1", "status": "TERMINATED", "completed": True, "learning_rate": 1e-3, "lora_r": 8,
             "target_modules": ["fc1", "fc2"], "target_module_set": "fc", "seed": 43, "dev_tuned_wer": 0.2,
             "dev_baseline_wer": 0.3, "forget_tuned_wer": 0.11, "forget_baseline_wer": 0.1, "steps": 200, "wall_seconds": 61.0}
    row = builder.result_columns(trial, ["learning_rate", "target_modules"], "dev", "forget")
    assert row == {"learning_rate": 1e-3, "target_modules": "fc", "seed": 43, "completed": True, "dev_tuned_wer": 0.2,
                   "dev_baseline_wer": 0.3, "canary_tuned_wer": 0.11, "canary_baseline_wer": 0.1, "steps": 200,
                   "seconds": 61.0, "trial_id": "a1"}
    errored = builder.result_columns({**trial, "status": "ERROR", "dev_tuned_wer": None}, ["lora_r"], "dev", "forget")
    assert errored["completed"] is False


def tiny_base(tmp_path: Path, model: Path, manifests: dict[str, Path]) -> Path:
    raw = {
        "name": "tiny-base",
        "trial": {
            "model": str(model), "train_manifest": str(manifests["train"]),
            "eval_manifests": {"heldout": str(manifests["heldout"]), "canary": str(manifests["canary"])},
            "max_steps": 2, "eval_every": 1, "batch_size": 4, "eval_batch_size": 4, "warmup_steps": 0,
            "learning_rate": 1e-3, "lora_r": 4, "target_modules": "qkvo", "device": "cpu",
        },
        "search": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "lora_r": {"choices": [4, 8]}},
        "points_to_evaluate": [{}],
        "num_samples": 4, "max_concurrent_trials": 2, "resources_per_trial": {"cpu": 1},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "max_wer_increase": {"canary": 0.5},
    }
    path = tmp_path / "tiny-base.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.ray
def test_build_a_table_interrupted_and_resumed(tiny_model_dir, tiny_manifests, tmp_path, monkeypatch):
    """3 recipes x 2 steps (a report each step), the best one with 2 more seeds: the build is
    interrupted before its first seed's sweep, resumes without rerunning the grid, a run
    after losing a results file goes through sweeps.run --resume and writes the same table,
    and a third extra seed asked for later trains only that seed."""
    import pandas as pd

    from benchmarks.search.__main__ import main as replay_main
    from benchmarks.search.table import ground_truth, read_search_table

    monkeypatch.chdir(tmp_path)
    base = tiny_base(tmp_path, tiny_model_dir, tiny_manifests)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"learning_rate": [1e-4, 1e-3, 1e-2], "lora_r": [4]}))
    out = tmp_path / "table.parquet"
    argv = ["--config", str(base), "--grid", str(grid), "--name", "tiny", "--extra-seed-recipes", "1", "--extra-seeds", "2", "--out", str(out), "--num-cpus", "2"]

    commands, real_run = [], builder.run_sweep_command

    def interrupt_before_seeds(command):
        commands.append(command)
        if "tiny-seed43" in command and len(commands) == 2:
            raise KeyboardInterrupt
        return real_run(command)

    monkeypatch.setattr(builder, "run_sweep_command", interrupt_before_seeds)
    assert builder.main(argv) == 130 and not out.exists()
    assert builder.main(argv) == 0
    names = [c[c.index("--name") + 1] for c in commands]
    assert names == ["tiny-grid", "tiny-seed43", "tiny-seed43", "tiny-seed44"], "the finished grid sweep ran again"
    assert not any("--resume" in c for c in commands[:2])

    generated = yaml.safe_load((tmp_path / "results" / "tiny-build" / "tiny-grid.yaml").read_text())
    assert generated["num_samples"] == 3 and len(generated["points_to_evaluate"]) == 3
    assert generated["scheduler"] == {"type": "none"} and generated["max_wer_increase"] == {"canary": 0.5}
    assert generated["trial"]["eval_every"] == 1

    table = read_search_table(out)
    rows = table.rows
    assert len(rows) == 5 and rows["recipe"].nunique() == 3 and rows["completed"].all()
    seeded = rows.groupby("recipe")["seed"].apply(sorted)
    assert sorted(seeded.map(tuple)) == [(42,), (42,), (42, 43, 44)]
    best = rows[rows["seed"] == 42].sort_values("dev_tuned_wer", kind="stable").iloc[0]["recipe"]
    assert seeded[best] == [42, 43, 44]
    for row in rows.itertuples():
        assert list(row.curve_steps) == [1, 2] and row.dev_wer_curve[-1] == row.dev_tuned_wer and row.steps == 2
        assert 0 <= row.canary_tuned_wer and 0 <= row.dev_baseline_wer and row.seconds > 0
    meta = table.meta
    assert (meta["dev_eval_set"], meta["canary_eval_set"], meta["canary_budget"]) == ("heldout", "canary", 0.5)
    assert (meta["eval_every"], meta["max_steps"], meta["max_reports"], meta["sweep_seed"]) == (1, 2, 2, 42)
    assert meta["grid"] == {"learning_rate": [1e-4, 1e-3, 1e-2], "lora_r": [4]} and meta["extra_seeds"] == [43, 44]
    assert set(meta["versions"]) == set(builder.VERSIONED) and meta["versions"]["torch"] and len(meta["commit"]["sha"]) == 40
    assert meta["points_to_evaluate"] == [{"learning_rate": 1e-3, "lora_r": 4}] and meta["built_at"]
    assert set(meta["racing"]) == {"finalists", "seeds"}
    ground_truth(table)
    assert replay_main(["--table", str(out), "--replays", "2", "--num-samples", "3"]) == 0

    # Everything finished: nothing runs again, the same table comes out.
    commands.clear()
    assert builder.main(argv) == 0 and commands == []
    same = ["recipe", "seed", "dev_tuned_wer", "canary_tuned_wer", "trial_id"]
    pd.testing.assert_frame_equal(read_search_table(out).rows[same], rows[same])
    assert read_search_table(out).meta["build_seconds"] > meta["build_seconds"], "the rerun forgot the build's time"

    # A sweep whose results file is gone is resumed through sweeps.run --resume, not restarted.
    (tmp_path / "results" / "tiny-seed44" / "trials.parquet").unlink()
    assert builder.main(argv) == 0
    assert len(commands) == 1 and "--resume" in commands[0]
    pd.testing.assert_frame_equal(read_search_table(out).rows[same], rows[same])

    # One more seed: only its sweep runs; the rows already there are kept as they were.
    commands.clear()
    assert builder.main([*argv, "--extra-seeds", "3"]) == 0
    assert [c[c.index("--name") + 1] for c in commands] == ["tiny-seed45"]
    grown = read_search_table(out)
    assert grown.meta["extra_seeds"] == [43, 44, 45] and sorted(grown.rows.loc[grown.rows["recipe"] == best, "seed"]) == [42, 43, 44, 45]
    pd.testing.assert_frame_equal(grown.rows[same].iloc[: len(rows)], rows[same])


def test_help_imports_neither_torch_nor_ray():
    import subprocess
    import sys

    code = ("import sys\nfrom benchmarks.search_table import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert not {'torch', 'ray'} & set(sys.modules), sorted({'torch', 'ray'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO_ROOT)
