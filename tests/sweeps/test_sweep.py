"""End-to-end sweeps on a real local Ray with the tiny random Moonshine (a few steps per trial).

Each sweep runs as ``python -m sweeps.run`` in a child process (tests/drivers.py), as a user
runs it; the test process never starts a Ray driver (tests/conftest.py says why). A killed
driver's Ray processes are killed by pid. ``--analyze`` reads Ray's saved state without
starting Ray, so it runs here. About two minutes on 2 cores.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from drivers import kill_tree, run_python, start_python
from trainable.config import TrialConfig

pytestmark = pytest.mark.ray

GOOD_LR, OTHER_LR = 1e-3, 3e-3


def tiny_sweep(name: str, model: Path, manifests: dict[str, Path], corrupt: Path | None = None, **changes) -> dict:
    """A 3-trial sweep on the tiny model. With ``corrupt``, trial 2 trains on a manifest
    with an unreadable audio file, so it must fail while the others complete."""
    train_choices = [str(manifests["train"])] + ([str(corrupt)] if corrupt else [])
    raw = {
        "name": name,
        "trial": {
            "model": str(model), "train_manifest": str(manifests["train"]),
            "eval_manifests": {"heldout": str(manifests["heldout"]), "canary": str(manifests["canary"])},
            "max_steps": 4, "eval_every": 2, "batch_size": 4, "eval_batch_size": 4, "warmup_steps": 0,
            "learning_rate": GOOD_LR, "device": "cpu",
        },
        "search": {
            "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
            "lora_r": {"choices": [4, 8]},
            "train_manifest": {"choices": train_choices},
        },
        "points_to_evaluate": [{}, {"train_manifest": train_choices[-1]}, {"learning_rate": OTHER_LR}],
        "num_samples": 3,
        "max_concurrent_trials": 2,
        "resources_per_trial": {"cpu": 1},
        "scheduler": "none",
        "max_failures": 0,
        "seed": 0,
        "racing": "none",  # the single-seed choice; the killed-while-racing test below covers the race
    }
    raw.update(changes)
    return raw


def corrupt_manifest(directory: Path, train_manifest: Path) -> Path:
    """The training manifest with its first utterance pointing at a file that is not audio."""
    bad_audio = directory / "corrupt.wav"
    bad_audio.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt this is not audio" * 4)
    rows = [json.loads(line) for line in train_manifest.read_text().splitlines() if line.strip()]
    for row in rows:
        row["audio_filepath"] = str(train_manifest.parent / row["audio_filepath"])
    rows[0]["audio_filepath"] = str(bad_audio)
    path = directory / "train_corrupt.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_sweep(directory: Path, raw: dict) -> Path:
    path = directory / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # keep heldout the first (optimised) eval set
    return path


def read_trials(results_dir: Path):
    import pandas as pd

    return pd.read_parquet(results_dir / "trials.parquet")


@pytest.mark.slow
def test_sweep_records_every_trial_and_a_failed_one(tiny_model_dir, tiny_manifests, tmp_path, monkeypatch):
    import pandas as pd

    from sweeps.run import main

    monkeypatch.chdir(tmp_path)
    corrupt = corrupt_manifest(tmp_path, tiny_manifests["train"])
    config = write_sweep(tmp_path, tiny_sweep("unit", tiny_model_dir, tiny_manifests, corrupt=corrupt))

    run_python(["-m", "sweeps.run", "--config", str(config), "--num-cpus", "2"], tmp_path, tmp_path / "driver.log")

    results_dir = tmp_path / "results" / "unit"
    trials = read_trials(results_dir).set_index("trial_number")
    assert list(trials.index) == [1, 2, 3]
    # Every recipe field is a column; the first trial is the hand-run point.
    assert set(f for f in TrialConfig.__dataclass_fields__) <= set(trials.columns)
    first = trials.loc[1]
    assert (first["learning_rate"], first["lora_r"], first["train_manifest"]) == (GOOD_LR, 8, str(tiny_manifests["train"]))
    assert trials.loc[3, "learning_rate"] == OTHER_LR

    # The corrupt-audio trial errored with a message that says why; the others completed.
    assert trials.loc[2, "status"] == "ERROR"
    assert "ManifestError" in trials.loc[2, "error"] and "corrupt.wav" in trials.loc[2, "error"]
    for number in (1, 3):
        row = trials.loc[number]
        assert row["status"] == "TERMINATED" and row["completed"] and pd.isna(row["error"])
        assert row["steps"] == 4 and row["num_threads"] == 1 and row["node"] == socket.gethostname()
        for column in ("eval_wer", "baseline_wer", "best_eval_wer", "heldout_tuned_wer", "heldout_baseline_wer",
                       "heldout_tuned_orthographic_wer", "canary_tuned_wer", "canary_baseline_wer", "wall_seconds"):
            assert 0 <= row[column] < float("inf"), column
        assert Path(row["output_dir"], "lora_adapter").is_dir()
        assert Path(row["output_dir"]).parent == Path(row["trial_dir"])

    # best.json holds a complete recipe with the winner's scores.
    best = json.loads((results_dir / "best.json").read_text())
    recipe = TrialConfig.from_file(results_dir / "best.json")
    winner = trials[trials["trial_id"] == best["trial_id"]].iloc[0]
    assert winner["status"] == "TERMINATED" and best["tuned_wer"] == winner["eval_wer"] == trials.loc[[1, 3], "eval_wer"].min()
    assert recipe.learning_rate == winner["learning_rate"] and recipe.lora_r == winner["lora_r"]
    assert best["baseline_wer"] == winner["baseline_wer"]
    summary = (results_dir / "summary.md").read_text()
    assert "2 completed, 0 stopped early, 1 errored" in summary and "corrupt.wav" in summary
    # The data report was made once, on the driver, from the fixed recipe's data.
    report = json.loads((results_dir / "data_report.json").read_text())
    assert report["durations_from"] == "audio headers" and report["sets"]["train"]["utterances"] == 8
    assert "## Data" in summary

    # Tune's usual CSV / TensorBoard output is there for existing tools.
    trial_dir = Path(first["trial_dir"])
    assert (trial_dir / "progress.csv").is_file() and list(trial_dir.glob("events.out.tfevents.*"))

    # The results come back from Ray's saved state alone, identical.
    before = (results_dir / "trials.parquet").read_bytes()
    (results_dir / "trials.parquet").unlink()
    assert main(["--analyze", "unit"]) == 0
    assert read_trials(results_dir).equals(read_trials_from_bytes(before))
    assert "sweep wall time" in (results_dir / "summary.md").read_text()  # kept in run.json

    # The winner can be chosen again under a canary budget, without training anything.
    done = trials.loc[[1, 3]]
    increase = done["canary_tuned_wer"] - done["canary_baseline_wer"]
    budget = max(0.0, float(increase.min()))
    expected = done[increase <= budget + 1e-9].sort_values("eval_wer", kind="stable").iloc[0]["trial_id"]
    assert main(["--analyze", "unit", f"max_wer_increase.canary={budget!r}"]) == 0
    assert json.loads((results_dir / "best.json").read_text())["trial_id"] == expected
    assert main(["--analyze", "unit", "num_samples=9"]) == 2  # describes trials already run


@pytest.mark.slow
def test_a_sweep_whose_every_trial_errors_ends_with_its_errors_not_a_traceback(tiny_model_dir, tiny_manifests, tmp_path):
    """Truncated audio passes the driver's header check (only a decode shows it), so every
    trial fails: the sweep must still write its table and summary and exit 1 (no winner)."""
    truncated = truncated_manifest(tmp_path, tiny_manifests["train"])
    raw = tiny_sweep("doomed", tiny_model_dir, tiny_manifests, search={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
                     points_to_evaluate=[], num_samples=2)
    raw["trial"]["train_manifest"] = str(truncated)
    config = write_sweep(tmp_path, raw)
    log = tmp_path / "driver.log"

    process = start_python(["-m", "sweeps.run", "--config", str(config), "--num-cpus", "2"], tmp_path, log)
    try:
        assert process.wait(timeout=300) == 1, log.read_text()[-4000:]
    finally:
        if process.poll() is None:
            kill_tree(process)
    printed = log.read_text()
    assert "Traceback (most recent call last)" not in printed.split("Sweep wall time")[-1]
    results_dir = tmp_path / "results" / "doomed"
    trials = read_trials(results_dir)
    assert list(trials["status"]) == ["ERROR", "ERROR"] and trials["steps"].isna().all()
    assert not (results_dir / "best.json").exists()
    summary = (results_dir / "summary.md").read_text()
    assert "No trial completed" in summary and "truncated" in summary
    assert "Sweep doomed, 2 trials: 0 completed, 0 stopped early, 2 errored." in printed and "\n2 trials: 0 completed" in summary
    assert "; no trial reported its own time." in summary and "Trial time" not in summary  # unknown, not 0 s


def truncated_manifest(directory: Path, train_manifest: Path) -> Path:
    """The training manifest with its first utterance's WAV cut to a third: its header still
    announces the whole length, so only a decode finds it short."""
    rows = [json.loads(line) for line in train_manifest.read_text().splitlines() if line.strip()]
    for row in rows:
        row["audio_filepath"] = str(train_manifest.parent / row["audio_filepath"])
    data = Path(rows[0]["audio_filepath"]).read_bytes()
    (directory / "cut.wav").write_bytes(data[: len(data) // 3])
    rows[0]["audio_filepath"] = str(directory / "cut.wav")
    path = directory / "train_truncated.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_trials_from_bytes(data: bytes):
    import io

    import pandas as pd

    return pd.read_parquet(io.BytesIO(data))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_driver(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return start_python(["-m", "sweeps.run", *args], cwd, log)


def resume_to_the_end(args: list[str], cwd: Path, log: Path, timeout: float) -> None:
    """``sweeps.run ... --resume`` must finish with exit 0; killed if it runs past ``timeout``."""
    run_python(["-m", "sweeps.run", *args, "--resume"], cwd, log, timeout)


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f"driver exited ({process.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def dashboard_healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/gcs_healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def finished_trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p.parent.parent for p in experiment.glob("trial_*/run/summary.json"))


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_a_finished_trial(tiny_model_dir, tiny_manifests, tmp_path):
    """kill -9 of the driver after the first trial, then --resume: all three trials end
    up done, the first one not trained again. The dashboard answers while the sweep runs."""
    raw = tiny_sweep("killed", tiny_model_dir, tiny_manifests, max_concurrent_trials=1,
                     scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
                     racing={"finalists": 1, "seeds": 1})  # the resumed search still ends in its race
    raw["trial"]["max_steps"] = 6
    config, log, port = write_sweep(tmp_path, raw), tmp_path / "driver.log", free_port()
    experiment = tmp_path / "results" / "killed" / "ray" / "killed"
    common = ["--config", str(config), "--num-cpus", "1", "--dashboard-port", str(port)]

    driver = start_driver(common, tmp_path, log)
    try:
        wait_for(lambda: f"Ray dashboard: http://127.0.0.1:{port}" in log.read_text(), 120, "the dashboard URL", driver, log)
        assert "login token: " in log.read_text() and "auth_token" in log.read_text()
        wait_for(lambda: dashboard_healthz(port), 60, "/api/gcs_healthz", driver, log)
        first_dir = wait_for(lambda: finished_trial_dirs(experiment), 240, "the first trial", driver, log)[0]
        summary = first_dir / "run" / "summary.json"
        first_written = summary.stat().st_mtime_ns
    finally:
        kill_tree(driver)
    assert len(finished_trial_dirs(experiment)) == 1, "kill came too late to test the resume"

    resume_to_the_end(common, tmp_path, log, timeout=300)

    trials = read_trials(tmp_path / "results" / "killed")
    assert len(trials) == 3 and set(trials["status"]) <= {"TERMINATED", "STOPPED_EARLY"}, trials[["status", "error"]]
    first = trials[trials["trial_dir"] == str(first_dir)].iloc[0]
    assert first["trial_number"] == 1 and first["status"] == "TERMINATED"
    assert summary.stat().st_mtime_ns == first_written, "the finished trial was trained again"
    assert first["eval_wer"] == json.loads(summary.read_text())["evals"]["heldout"]["tuned"]["wer"]
    race = pd_read(tmp_path / "results" / "killed" / "racing.parquet")
    assert len(race) == 1 and race["status"].iloc[0] == "TERMINATED" and race["seed"].iloc[0] == 1042


@pytest.mark.slow
def test_a_trial_killed_after_its_checkpoints_continues_from_them_not_from_step_0(tiny_model_dir, tiny_manifests, tmp_path):
    """kill -9 of the driver once a trial has begun its second checkpoint: Ray's saved state
    (written every 10 s or more, or after checkpoints_to_keep checkpoints) most likely does
    not know the first, but it is complete on disk, so the resumed trial continues from it
    (or from the second, if complete), not from step 0, and Ray counts every report once.
    run.json keeps both invocations."""
    from ray.tune import ExperimentAnalysis

    raw = tiny_sweep("ckpt", tiny_model_dir, tiny_manifests, search={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
                     points_to_evaluate=[{}], num_samples=1, max_concurrent_trials=1, checkpoints_to_keep=5)
    raw["trial"]["max_steps"] = 12
    config, log = write_sweep(tmp_path, raw), tmp_path / "driver.log"
    experiment, results = tmp_path / "results" / "ckpt" / "ray" / "ckpt", tmp_path / "results" / "ckpt"
    common = ["--config", str(config), "--num-cpus", "1", "--dashboard-port", str(free_port())]

    driver = start_driver(common, tmp_path, log)
    try:
        wait_for(lambda: list(experiment.glob("trial_*/checkpoint_000001")), 300, "the second checkpoint's folder", driver, log)
    finally:
        kill_tree(driver)
    assert not finished_trial_dirs(experiment), "kill came too late to test the resume"

    resume_to_the_end(common, tmp_path, log, timeout=300)

    [trial_dir] = experiment.glob("trial_*")
    first, resumed = [json.loads(line) for line in (trial_dir / "attempts.jsonl").read_text().splitlines()]
    assert first["resumed_from"] is None and resumed["resumed_from"] is not None, "the resumed trial started again from step 0"
    [trial] = ExperimentAnalysis(str(experiment)).trials
    assert trial.last_result["step"] == 12 and trial.last_result["training_iteration"] == 6  # 5 checkpoints, then the end
    run = json.loads((results / "run.json").read_text())
    assert [entry["resumed"] for entry in run["invocations"]] == [False, True]
    assert [entry["command"] for entry in run["invocations"]] == [f"python -m sweeps.run {shlex.join(common)}",
                                                                 f"python -m sweeps.run {shlex.join(common)} --resume"]


def finished_race_dirs(results: Path, name: str) -> list[Path]:
    return sorted(p.parent.parent for p in (results / name / "ray" / f"{name}-racing").glob("trial_*/run/summary.json"))


@pytest.mark.slow
def test_a_sweep_killed_while_racing_resumes_and_its_study_is_stored(tiny_model_dir, tiny_manifests, tmp_path):
    """Search (ASHA), then race 2 finalists with 2 new seeds each; kill -9 of the driver once
    the first racing trial has finished, then --resume: the race ends without training that
    trial again, the winner is chosen on its mean over 3 seeds, and the Optuna study in
    optuna.db holds every search trial once, ASHA-stopped ones as PRUNED, with constraints."""
    import optuna

    raw = tiny_sweep("raced", tiny_model_dir, tiny_manifests, max_concurrent_trials=1,
                     scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
                     racing={"finalists": 2, "seeds": 2}, max_wer_increase={"canary": 0.99})
    config, log, results = write_sweep(tmp_path, raw), tmp_path / "driver.log", tmp_path / "results"
    common = ["--config", str(config), "--num-cpus", "1", "--dashboard-port", str(free_port())]

    driver = start_driver(common, tmp_path, log)
    try:
        first_dir = wait_for(lambda: finished_race_dirs(results, "raced"), 600, "the first racing trial", driver, log)[0]
        first_written = (first_dir / "run" / "summary.json").stat().st_mtime_ns
    finally:
        kill_tree(driver)
    assert len(finished_race_dirs(results, "raced")) < 4, "kill came too late to test the resume"

    resume_to_the_end(common, tmp_path, log, timeout=600)

    assert (first_dir / "run" / "summary.json").stat().st_mtime_ns == first_written, "a finished racing trial was trained again"
    race = pd_read(results / "raced" / "racing.parquet")
    assert len(race) == 4 and set(race["status"]) == {"TERMINATED"} and sorted(race["seed"]) == [1042, 1042, 2042, 2042]
    best = json.loads((results / "raced" / "best.json").read_text())
    assert best["chosen_by"] == "racing" and best["selection_seeds"] == [42, 1042, 2042]
    winner = next(f for f in best["race"]["finalists"] if f["trial_id"] == best["trial_id"])
    assert best["metric"] == pytest.approx(sum(winner["wers"]) / 3)
    assert all(best["metric"] <= f["mean_wer"] for f in best["race"]["finalists"])
    assert "## Finalists raced across seeds" in (results / "raced" / "summary.md").read_text()

    trials = read_trials(results / "raced")
    study = optuna.load_study(study_name="raced", storage=f"sqlite:///{results / 'raced' / 'optuna.db'}")
    # The second point is the first one again (one train manifest to choose): the study is told
    # its result (repeat_of) and the sweep trains the third point instead.
    trained = [t for t in study.trials if "repeat_of" not in t.user_attrs]
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert len(trained) == len(trials) == 3 and len(repeats) == 1
    assert OTHER_LR in set(trials["learning_rate"])
    states = {"TERMINATED": "COMPLETE", "STOPPED_EARLY": "PRUNED", "ERROR": "FAIL"}
    assert sorted(states[s] for s in trials["status"]) == sorted(t.state.name for t in trained)
    assert all("canary" in t.constraints for t in study.trials if t.state.name != "FAIL")


def pd_read(path: Path):
    import pandas as pd

    return pd.read_parquet(path)


# A sweep driver that stops where a kill -9 may catch it: Tune has written tuner.pkl and
# asked Optuna for the first trials, but has not saved its first experiment state. Ray's
# own save waits there, so the test kills the driver (kill_tree) at that exact point.
STOPPED_BEFORE_FIRST_SAVE = """
import sys, time
from ray.tune.execution.tune_controller import TuneController
from sweeps.run import main

experiment, save = sys.argv[1], TuneController.save_to_dir

def wait_to_be_killed(self):
    if self._storage.experiment_dir_name != experiment:
        return save(self)
    sys.stdout.write("STOPPED BEFORE THE FIRST SAVE\\n")
    time.sleep(600)

TuneController.save_to_dir = wait_to_be_killed
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("stopped_in", ["search", "race"])
def test_a_sweep_killed_before_rays_first_save_starts_over_on_resume(tiny_model_dir, tiny_manifests, tmp_path, stopped_in):
    """kill -9 after Tune wrote tuner.pkl (and Optuna handed out the first trials) but before
    Ray saved any experiment state: Ray cannot restore that (it restarts with a budget of one
    trial and never restores the searcher), so --resume starts that experiment over and it
    runs every trial: all 3 search trials, the points_to_evaluate first, with no trial left
    RUNNING in optuna.db; or both racing trials."""
    import optuna

    racing = {"finalists": 1, "seeds": 2} if stopped_in == "race" else "none"
    raw = tiny_sweep("early", tiny_model_dir, tiny_manifests, racing=racing)
    config, log, results = write_sweep(tmp_path, raw), tmp_path / "driver.log", tmp_path / "results" / "early"
    experiment = results / "ray" / ("early-racing" if stopped_in == "race" else "early")
    common = ["--config", str(config), "--num-cpus", "2", "--dashboard-port", str(free_port())]

    driver = start_python(["-c", STOPPED_BEFORE_FIRST_SAVE, experiment.name, *common], tmp_path, log)
    try:
        wait_for(lambda: "STOPPED BEFORE THE FIRST SAVE" in log.read_text(), 300, "Ray's first save", driver, log)
    finally:
        kill_tree(driver)
    assert (experiment / "tuner.pkl").is_file() and not list(experiment.glob("experiment_state-*.json"))
    study = optuna.load_study(study_name="early", storage=f"sqlite:///{results / 'optuna.db'}")
    if stopped_in == "search":
        assert "RUNNING" in {t.state.name for t in study.trials}, "Optuna handed out no trial before the kill"

    resume_to_the_end(common, tmp_path, log, timeout=600)

    printed = log.read_text().split("STOPPED BEFORE THE FIRST SAVE")[-1]
    assert "stopped before Ray saved its first experiment state" in printed and "Restarting experiment" not in printed
    trials = read_trials(results).set_index("trial_number")
    assert list(trials.index) == [1, 2, 3] and set(trials["status"]) == {"TERMINATED"}, trials[["status", "error"]]
    assert (trials.loc[1, "learning_rate"], trials.loc[3, "learning_rate"]) == (GOOD_LR, OTHER_LR)
    study = optuna.load_study(study_name="early", storage=f"sqlite:///{results / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    if stopped_in == "race":
        race = pd_read(results / "racing.parquet")
        assert len(race) == 2 and set(race["status"]) == {"TERMINATED"} and sorted(race["seed"]) == [1042, 2042]
    run = json.loads((results / "run.json").read_text())
    assert [entry["resumed"] for entry in run["invocations"]] == [False, stopped_in == "race"]
    assert "--resume" in run["invocations"][1]["command"]
