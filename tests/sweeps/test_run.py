"""The command line without a sweep: --help, errors, resume guards, dashboard warnings, ASHA setup."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from argparse import Namespace

import pytest
import yaml

from sweeps.search.config import SweepConfig
from trainable.config_io import ConfigError
from trainable.config import REPO_ROOT


def sweep_dict(**changes) -> dict:
    raw = {
        "name": "cli",
        "trial": {"max_steps": 100, "eval_every": 25},
        "search": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "lora_r": [4, 8, 16]},
        "points_to_evaluate": [{}],
        "num_samples": 4,
    }
    raw.update(changes)
    return raw


def write_yaml(tmp_path, raw: dict):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_help_imports_no_torch_transformers_peft_or_ray():
    code = (
        "import sys\nfrom sweeps.run import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "import json\nprint(json.dumps(sorted(m for m in ('torch', 'transformers', 'peft', 'ray', 'optuna') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--resume" in out.stdout and "--dashboard-host" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_bad_override_on_the_command_line_exits_2_naming_the_key(tmp_path, capsys):
    from sweeps.run import main

    assert main(["--config", str(write_yaml(tmp_path, sweep_dict())), "trial.lora_rank=4"]) == 2
    assert "lora_rank" in capsys.readouterr().err


def test_overrides_may_sit_on_either_side_of_an_option(tmp_path, capsys):
    """Both overrides reach the config: only together do they make the grace period too long."""
    from sweeps.run import main

    argv = ["scheduler.grace_period=3", "--config", str(write_yaml(tmp_path, sweep_dict())), "trial.max_steps=50"]
    assert main(argv) == 2
    assert "scheduler.grace_period: 3 reports, but the longest trial makes 2" in capsys.readouterr().err


def test_resources_beyond_this_machine_are_refused():
    from sweeps.search.experiment import check_local_resources

    sweep = SweepConfig.from_dict(sweep_dict(resources_per_trial={"cpu": 1, "gpu": 0.25}))
    with pytest.raises(ConfigError, match="resources_per_trial.gpu"):
        check_local_resources(sweep, {"CPU": 2.0})
    check_local_resources(sweep, {"CPU": 2.0, "GPU": 1.0})


def test_resume_refuses_a_changed_search_space(tmp_path, monkeypatch):
    from sweeps.run import resolve_sweep

    monkeypatch.chdir(tmp_path)
    config = write_yaml(tmp_path, sweep_dict())
    saved = tmp_path / "results" / "cli" / "sweep.yaml"
    saved.parent.mkdir(parents=True)
    saved.write_text(yaml.safe_dump(SweepConfig.from_dict(sweep_dict()).to_dict()))

    args = Namespace(config=str(config), overrides=["search.lora_r.choices=[8, 32]"], name=None, resume=True)
    with pytest.raises(ConfigError, match="search.lora_r.choices"):
        resolve_sweep(args)
    # The same sweep, or no config at all, resumes as it was first run.
    assert resolve_sweep(Namespace(config=str(config), overrides=[], name=None, resume=True)).name == "cli"
    resumed = resolve_sweep(Namespace(config=None, overrides=[], name="cli", resume=True))
    assert resumed == SweepConfig.from_dict(sweep_dict())
    # Overrides without --config change the sweep as first run: the refusal names only them.
    with pytest.raises(ConfigError, match=r"--resume: num_samples differ from"):
        resolve_sweep(Namespace(config=None, overrides=["num_samples=9"], name="cli", resume=True))


def test_dashboard_on_all_interfaces_warns_loudly(capsys):
    from sweeps.ray_init import _warn_if_exposed

    _warn_if_exposed("127.0.0.1")
    assert capsys.readouterr().err == ""
    _warn_if_exposed("0.0.0.0")
    err = capsys.readouterr().err
    assert "WARNING" in err and "0.0.0.0" in err and "arbitrary code" in err


def test_asha_counts_eval_reports():
    from sweeps.search.experiment import build_scheduler

    sweep = SweepConfig.from_dict(sweep_dict(scheduler={"type": "asha", "grace_period": 2, "reduction_factor": 3}))
    asha = build_scheduler(sweep)
    assert asha._time_attr == "training_iteration" and asha._max_t == sweep.max_reports == 4
    assert asha._reduction_factor == 3 and asha._brackets[0]._rungs[-1][0] == 2  # first rung at the grace period
    assert build_scheduler(SweepConfig.from_dict(sweep_dict(scheduler="none"))) is None


def test_inputs_check_accepts_dataset_specs(tiny_config, tmp_path):
    """Dataset specs (folder:split, a hub id) pass the pre-Ray input check; a missing folder is named."""
    from sweeps.search.experiment import check_inputs_exist

    folder = tmp_path / "af" / "test"
    folder.mkdir(parents=True)
    (folder / "metadata.csv").write_text("file_name,text\n")
    trial = tiny_config.to_dict() | {"eval_manifests": {"dev": "someone/speech:dev", "test": f"{tmp_path / 'af'}:test"}}
    trial.pop("output_dir"), trial.pop("num_threads")
    check_inputs_exist(SweepConfig.from_dict({"name": "d", "trial": trial, "scheduler": "none"}))
    trial["eval_manifests"]["test"] = f"{tmp_path / 'nowhere'}:test"
    with pytest.raises(ConfigError, match="trial.eval_manifests.test: .*nowhere:test does not exist"):
        check_inputs_exist(SweepConfig.from_dict({"name": "d", "trial": trial, "scheduler": "none"}))


@pytest.mark.parametrize("unfinished_search, unfinished_race, best, status", [
    (0, 0, {"trial_id": "t1"}, 0), (0, 2, None, 1), (1, 0, {"trial_id": "t1"}, 1), (0, 0, None, 1)])
def test_an_unfinished_sweep_exits_1_even_with_a_best_so_far(monkeypatch, capsys, unfinished_search, unfinished_race, best, status):
    """An interrupted search or race is no answer yet: exit 1, whatever best so far there is."""
    import pandas as pd

    import sweeps.search.results as results
    import sweeps.search.summary as summary
    from sweeps.run import report_results
    from sweeps.search.experiment import SweepPaths

    made = results.SweepResults(trials=pd.DataFrame(), best=best, summary_markdown="",
                                unfinished_search=unfinished_search, unfinished_race=unfinished_race)
    monkeypatch.setattr(results, "write_results", lambda *args, **kwargs: made)
    monkeypatch.setattr(summary, "describe_best", lambda results, sweep: "described")
    paths = SweepPaths(results_dir="r", storage_path="s", experiment_path="e")
    assert report_results(SweepConfig.from_dict(sweep_dict()), paths, None) == status


def test_the_results_line_names_best_json_only_when_a_winner_was_written(tmp_path, capsys):
    """Under a budget no trial keeps there is no winner and no best.json (a stale one is
    removed), so the closing line must not send the user to it; with a winner it does."""
    import pandas as pd

    from sweeps.run import report_results
    from sweeps.search.experiment import SweepPaths

    def finished(number: int, canary_rise: float) -> dict:
        return {"trial_number": number, "trial_id": f"t{number}", "status": "TERMINATED", "learning_rate": 1e-3, "lora_r": 8,
                "eval_wer": 0.3, "best_eval_wer": 0.3, "baseline_wer": 0.4, "dev_baseline_wer": 0.4, "dev_tuned_wer": 0.3,
                "canary_baseline_wer": 0.02, "canary_tuned_wer": 0.02 + canary_rise, "completed": True, "steps": 100,
                "wall_seconds": 10.0, "node": "host", "error": None, "trial_dir": f"/x/trial_t{number}"}

    trials = pd.DataFrame([finished(1, 0.05), finished(2, 0.04)])
    paths = SweepPaths.for_sweep("cli", None, results_root=tmp_path)
    kept = SweepConfig.from_dict(sweep_dict(num_samples=2, racing="none", max_wer_increase={"canary": 0.1}))
    assert report_results(kept, paths, None, search_trials=trials) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"Results: {paths.results_dir}/ (trials.parquet, best.json, summary.md)"

    broken = SweepConfig.from_dict(sweep_dict(num_samples=2, racing="none", max_wer_increase={"canary": 0.01}))
    assert report_results(broken, paths, None, search_trials=trials) == 1
    assert not (paths.results_dir / "best.json").exists()
    assert capsys.readouterr().out.splitlines()[-1] == f"Results: {paths.results_dir}/ (trials.parquet, summary.md)"


def test_analyze_under_another_budget_passes_the_sweep_as_run(tmp_path, monkeypatch):
    """The race raced the finalists of the sweep's own budgets; --analyze with another budget
    must say which those were, so a new finalist shows as not raced."""
    import sweeps.run as run

    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "sweep.yaml").write_text(yaml.safe_dump(sweep_dict(max_wer_increase={"canary": 0.02})))
    saved_experiment(tmp_path / "e")
    (tmp_path / "cli" / "run.json").write_text(json.dumps({"storage_path": str(tmp_path / "s"), "experiment_path": str(tmp_path / "e")}))
    monkeypatch.setattr(run, "RESULTS_ROOT", tmp_path)
    seen = {}
    monkeypatch.setattr(run, "report_results", lambda sweep, paths, wall_seconds, sweep_as_run=None, **kwargs:
                        seen.update(sweep=sweep, as_run=sweep_as_run) or 0)
    assert run.analyze("cli", ["max_wer_increase.canary=0.001"]) == 0
    assert dict(seen["sweep"].max_wer_increase) == {"canary": 0.001} and dict(seen["as_run"].max_wer_increase) == {"canary": 0.02}


def test_run_json_keeps_how_the_sweep_was_started_and_every_resume(tmp_path):
    """run.json lists every invocation, the one that started the sweep first; one written
    before invocations were kept becomes the first of them."""
    from sweeps.search.experiment import SweepPaths, record_wall_time, save_sweep

    sweep, paths = SweepConfig.from_dict(sweep_dict()), SweepPaths.for_sweep("cli", None, results_root=tmp_path)
    commands = ["python -m sweeps.run --config cli.yaml num_samples=4", "python -m sweeps.run --resume --name cli",
                "python -m sweeps.run --resume --name cli --num-cpus 1"]
    save_sweep(sweep, paths, resumed=False, command=commands[0])
    record_wall_time(paths.results_dir, 12.0)
    for command in commands[1:]:
        save_sweep(sweep, paths, resumed=True, command=command)
    run = json.loads((paths.results_dir / "run.json").read_text())
    assert (run["storage_path"], run["experiment_path"]) == (paths.storage_path, paths.experiment_path)
    assert [entry["command"] for entry in run["invocations"]] == commands
    assert [entry["resumed"] for entry in run["invocations"]] == [False, True, True]
    assert run["invocations"][0]["wall_seconds"] == 12.0 and "wall_seconds" not in run["invocations"][1]
    assert run["invocations"][0]["time"] <= run["invocations"][1]["time"] <= run["invocations"][2]["time"]

    older = {"storage_path": "s", "experiment_path": "e", "command": ["sweeps/run.py"], "resumed": False, "time": 1.0, "wall_seconds": 9.0}
    (paths.results_dir / "run.json").write_text(json.dumps(older))
    save_sweep(sweep, paths, resumed=True, command=commands[1])
    first, resumed = json.loads((paths.results_dir / "run.json").read_text())["invocations"]
    assert first == {"command": ["sweeps/run.py"], "time": 1.0, "resumed": False, "wall_seconds": 9.0} and resumed["resumed"]

    # A --resume that starts over a sweep stopped before Ray's first save keeps how it was started.
    save_sweep(sweep, paths, resumed=False, continued=True, command=commands[1])
    invoked = json.loads((paths.results_dir / "run.json").read_text())["invocations"]
    assert [entry["resumed"] for entry in invoked] == [False, True, False] and invoked[0]["wall_seconds"] == 9.0


def test_run_json_records_the_command_the_user_reruns_not_run_pys_path():
    """sys.argv[0] is the path of sweeps/run.py ('/work/.../sweeps/run.py --name h9 ...'),
    which `python -m` does not take: the command is the module and the arguments, quoted so
    the shell splits them back as given."""
    from sweeps.run import build_parser, rerun_command

    argv = ["--name", "my sweep", "num_samples=3", "trial.eval_manifests.dev=data/dev set.jsonl", "--num-cpus", "1"]
    command = rerun_command(argv)
    assert command == "python -m sweeps.run --name 'my sweep' num_samples=3 'trial.eval_manifests.dev=data/dev set.jsonl' --num-cpus 1"
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "sweeps.run"]
    assert build_parser().parse_intermixed_args(words[3:]) == build_parser().parse_intermixed_args(argv)
    assert rerun_command([]) == "python -m sweeps.run"


ONE_CPU = {"max_concurrent_trials": 2, "trials_that_fit": 1, "cluster_resources": {"CPU": 1.0, "GPU": 0.0},
           "resources_per_trial": {"CPU": 1.0, "GPU": 0.0}}


@pytest.mark.parametrize("invocations, wall_seconds, concurrent", [
    ([{"command": ["run.py"], "resumed": False, "wall_seconds": 40.0, "concurrency": ONE_CPU}], 40.0, 1),
    ([{"command": ["run.py"], "resumed": False, "wall_seconds": 40.0, "concurrency": ONE_CPU},
      {"command": ["run.py", "--resume"], "resumed": True, "wall_seconds": 30.0, "concurrency": ONE_CPU}], None, None),
    # killed before Ray's first save, then started over by --resume: every trial ran in the second
    ([{"command": ["run.py"], "resumed": False, "concurrency": ONE_CPU},
      {"command": ["run.py", "--resume"], "resumed": False, "wall_seconds": 30.0, "concurrency": ONE_CPU}], 30.0, 1),
])
def test_analyze_times_only_a_sweep_run_in_one_go(tmp_path, monkeypatch, invocations, wall_seconds, concurrent):
    """The wall time of an interrupted first run is not the wall time of a resumed sweep's
    trials (they span every invocation): --analyze gives it no overhead ratio. A sweep run in
    one go is timed against the trials its cluster fit at once, as recorded when it ran."""
    import sweeps.run as run

    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "sweep.yaml").write_text(yaml.safe_dump(sweep_dict()))
    saved_experiment(tmp_path / "e")
    (tmp_path / "cli" / "run.json").write_text(json.dumps({"storage_path": str(tmp_path / "s"), "experiment_path": str(tmp_path / "e"), "invocations": invocations}))
    monkeypatch.setattr(run, "RESULTS_ROOT", tmp_path)
    seen = {}
    monkeypatch.setattr(run, "report_results", lambda sweep, paths, wall_seconds, concurrency=None, **kwargs:
                        seen.update(wall_seconds=wall_seconds, concurrency=concurrency) or 0)
    assert run.analyze("cli") == 0
    assert seen["wall_seconds"] == wall_seconds
    assert (seen["concurrency"].trials if seen["concurrency"] else None) == concurrent


def saved_experiment(path):
    """An experiment folder as --analyze finds it after a run: Ray's saved state in it."""
    path.mkdir(parents=True)
    (path / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")


def stopped_sweep(tmp_path, *files: str):
    """A sweep's folders as a killed driver left them: tuner.pkl and ``files`` in the experiment."""
    from sweeps.search.experiment import SweepPaths

    paths = SweepPaths.for_sweep("cli", None, results_root=tmp_path)
    experiment = tmp_path / "cli" / "ray" / "cli"
    for name in ("tuner.pkl", *files):
        (experiment / name).parent.mkdir(parents=True, exist_ok=True)
        (experiment / name).write_bytes(b"")
    return SweepConfig.from_dict(sweep_dict()), paths


@pytest.mark.parametrize("files", [(), ("trial_0a1b2c3d/.keep",)], ids=["tuner.pkl", "empty trial folder"])
def test_resume_starts_over_a_sweep_stopped_before_rays_first_save(tmp_path, capsys, files):
    """tuner.pkl without experiment_state-*.json (kill -9 in Tune's first step): Ray cannot
    restore it (it would restart with a budget of one trial), so --resume starts it over and
    says so; without --resume it is still an existing sweep, not started over by accident."""
    from sweeps.search.experiment import check_experiment

    sweep, paths = stopped_sweep(tmp_path, *files)
    assert check_experiment(sweep, paths, resume=True) is False
    assert f"sweep 'cli' stopped before Ray saved its first experiment state (no experiment_state-*.json in {paths.experiment_path})" \
        in capsys.readouterr().out
    with pytest.raises(ConfigError, match="already exists .* add --resume"):
        check_experiment(sweep, paths, resume=False)


def test_resume_restores_a_sweep_with_saved_state(tmp_path, capsys):
    from sweeps.search.experiment import check_experiment

    sweep, paths = stopped_sweep(tmp_path, "experiment_state-2026-01-01_00-00-00.json")
    assert check_experiment(sweep, paths, resume=True) is True
    assert "starting it over" not in capsys.readouterr().out


def test_resume_never_starts_over_trials_that_hold_checkpoints(tmp_path):
    """Checkpoints without Ray's state (lost some other way) are trained work: refuse, naming them."""
    from sweeps.search.experiment import check_experiment

    sweep, paths = stopped_sweep(tmp_path, "trial_0a1b2c3d/.keep", "trial_4e5f6a7b/checkpoint_000000/adapter.bin")
    with pytest.raises(ConfigError, match=r"no experiment state .* trials trial_4e5f6a7b hold checkpoints"):
        check_experiment(sweep, paths, resume=True)


def test_analyze_of_a_sweep_stopped_before_rays_first_save_says_to_resume(tmp_path, monkeypatch):
    """No experiment state means no trial results: --analyze names that and the --resume
    command instead of failing inside Ray's ExperimentAnalysis."""
    import sweeps.run as run

    _, paths = stopped_sweep(tmp_path)
    (tmp_path / "cli" / "sweep.yaml").write_text(yaml.safe_dump(sweep_dict()))
    (tmp_path / "cli" / "run.json").write_text(json.dumps({"storage_path": paths.storage_path, "experiment_path": paths.experiment_path}))
    monkeypatch.setattr(run, "RESULTS_ROOT", tmp_path)
    with pytest.raises(ConfigError, match=r"stopped before Ray saved its first experiment state .* python -m sweeps.run --resume --name cli"):
        run.analyze("cli")


def test_analyze_of_a_sweep_whose_ray_folder_is_gone_says_where_it_looked(tmp_path, monkeypatch):
    """run.json names an experiment folder that was moved or deleted: an error naming it, not
    Ray's ValueError traceback."""
    import sweeps.run as run

    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "sweep.yaml").write_text(yaml.safe_dump(sweep_dict()))
    gone = tmp_path / "moved" / "ray" / "cli"
    (tmp_path / "cli" / "run.json").write_text(json.dumps({"storage_path": str(gone.parent), "experiment_path": str(gone)}))
    monkeypatch.setattr(run, "RESULTS_ROOT", tmp_path)
    with pytest.raises(ConfigError, match=rf"--analyze cli: no Ray experiment at {gone} \(run.json's experiment_path\)"):
        run.analyze("cli")
