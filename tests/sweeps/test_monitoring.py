"""What a running sweep shows: the console table, Ray metrics, the dashboard's job and
actor names, and the stored study in optuna-dashboard.

The unit tests need no Ray. ``watched_sweep`` runs one tiny sweep the way a user does
(``python -m sweeps.run`` in a child process starts Ray with its dashboard) while a thread
reads the node's metrics export endpoint and the dashboard's API, as Prometheus and a
browser would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from drivers import run_python
from sweeps.ray_init import named_job
from sweeps.search.config import SweepConfig
from sweeps.search.monitoring import (
    NEW_OUTPUT_SWITCH, console_metrics, gauge_readings, progress_reporter, trial_label, tune_console,
)
from test_sweep import tiny_sweep, write_sweep

SWEEP = SweepConfig.from_dict({
    "name": "watched",
    "trial": {"eval_manifests": {"dev": "dev.jsonl", "canary": "canary.jsonl", "test": "test.jsonl"}},
    "search": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "lora_r": [4, 8]},
    "select_on": "canary",
    "scheduler": "none",
})


# --------------------------------------------------------------------------- no Ray


def test_console_columns_are_the_searched_parameters_and_every_eval_sets_wer():
    assert console_metrics(SWEEP) == {"step": "step", "eval_wer": "canary WER", "dev_tuned_wer": "dev WER", "test_tuned_wer": "test WER"}
    reporter = progress_reporter(SWEEP, SWEEP.searched_names)
    assert reporter._parameter_columns == ["learning_rate", "lora_r"]


def test_the_search_console_names_as_best_only_a_trial_that_could_win_and_the_race_console_none():
    """Tune's own line names the lowest WER of any trial: one ASHA stopped early or one over
    the canary budget would be 'Current best trial' just above a closing printout that names
    another. The search's line follows the winner's rule; the race's names none (a mean wins)."""
    from functools import partial

    from ray.tune.experiment import Trial

    from sweeps.search.experiment import could_win

    budgeted = SweepConfig.from_dict({**SWEEP.to_dict(), "max_wer_increase": {"dev": 0.02}})
    reports = [{"eval_wer": 0.30, "dev_wer_increase": 0.01, "completed": True},
               {"eval_wer": 0.10, "dev_wer_increase": 0.01, "completed": False},  # stopped early by ASHA
               {"eval_wer": 0.15, "dev_wer_increase": 0.05, "completed": True},   # over the budget
               {"eval_wer": 0.25, "dev_wer_increase": 0.02, "completed": True},   # at the budget: within
               {"eval_wer": 0.05}]                                                  # running, no budget known yet
    trials = []
    for number, report in enumerate(reports):
        trial = Trial("train_trial", config={}, stub=True, trial_id=f"t{number}")
        trial.run_metadata.last_result = report
        trials.append(trial)
    search = progress_reporter(budgeted, budgeted.searched_names, best_among=partial(could_win, sweep=budgeted))
    race = progress_reporter(budgeted, budgeted.searched_names)
    for reporter in (search, race):
        reporter.setup(metric="eval_wer", mode="min")
    assert search._current_best_trial(trials) == (trials[3], "eval_wer")
    assert race._current_best_trial(trials) == (None, None)
    assert race._parameter_columns == ["learning_rate", "lora_r"]


def test_gauges_take_step_loss_and_each_eval_sets_wer_from_a_report():
    import numpy as np

    report = {"step": 50, "train_loss": np.float64(1.25), "nonfinite_steps": 0, "eval_wer": 0.3, "completed": False,
              "dev_tuned_wer": 0.2, "dev_baseline_wer": 0.25, "dev_tuned_cer": 0.1, "canary_tuned_wer": 0.3,
              "canary_wer_increase": 0.01, "node": "host-a"}
    assert gauge_readings(report) == {
        ("sweep_trial_step", ()): 50.0,
        ("sweep_trial_train_loss", ()): 1.25,
        ("sweep_trial_wer", (("eval_set", "dev"), ("system", "tuned"))): 0.2,
        ("sweep_trial_wer", (("eval_set", "dev"), ("system", "baseline"))): 0.25,
        ("sweep_trial_wer", (("eval_set", "canary"), ("system", "tuned"))): 0.3,
    }
    assert gauge_readings({"step": 200, "done": True}) == {("sweep_trial_step", ()): 200.0}  # a final report has no loss


def test_a_trial_label_names_the_trial_and_its_searched_values_only():
    config = {"learning_rate": 0.0012345, "lora_r": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
              "model": "/models/m", "train_manifest": "/data/train.jsonl"}
    assert trial_label("ab12", config, ("learning_rate", "lora_r", "target_modules")) == \
        "trial ab12 learning_rate=0.00123 lora_r=8 target_modules=qkvo"


def test_tunes_own_reporter_is_switched_on_only_while_the_sweep_runs(monkeypatch):
    monkeypatch.delenv(NEW_OUTPUT_SWITCH, raising=False)
    with tune_console():
        assert os.environ[NEW_OUTPUT_SWITCH] == "0"
    assert NEW_OUTPUT_SWITCH not in os.environ
    monkeypatch.setenv(NEW_OUTPUT_SWITCH, "1")  # the user's choice stands
    with tune_console():
        assert os.environ[NEW_OUTPUT_SWITCH] == "1"


def test_a_named_job_carries_its_name_in_the_metadata_the_dashboard_reads():
    assert named_job("sweep demo").metadata == {"job_name": "sweep demo"}
    assert named_job("").metadata == {}


# --------------------------------------------------------------------------- a watched tiny sweep


class Watcher:
    """Polls, while the sweep's driver runs, what Prometheus and a browser would
    read: the node's metrics export endpoint (often, since a tiny trial lasts seconds) and
    the dashboard's jobs and actors (its state API answers slowly under load), each in its
    own thread."""

    def __init__(self, dashboard_port: int):
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        self.metric_lines: set[str] = set()
        self.jobs: list[dict] = []
        self.actor_reprs: set[str] = set()
        self.ports: list[int] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._poll, args=(read, every), daemon=True)
                        for read, every in ((self._read_metrics, 0.2), (self._read_dashboard, 1.0))]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _poll(self, read, every: float) -> None:
        while not self.stop.wait(every):
            try:
                read()
            except Exception:  # Ray or its dashboard not (or no longer) up
                continue

    def _read_metrics(self) -> None:
        if not self.ports:  # each node's export port, from the dashboard's node summary
            nodes = json.loads(fetch(self.dashboard + "/nodes?view=summary", token=True))["data"]["summary"]
            self.ports = [node["raylet"]["metricsExportPort"] for node in nodes]
        for port in self.ports:
            self.metric_lines |= {line for line in fetch(f"http://127.0.0.1:{port}/metrics").splitlines()
                                  if line.startswith("ray_sweep_trial_")}

    def _read_dashboard(self) -> None:
        self.jobs = json.loads(fetch(self.dashboard + "/api/jobs/", token=True))
        actors = json.loads(fetch(self.dashboard + "/api/v0/actors?detail=1&limit=100", token=True))
        self.actor_reprs |= {actor.get("repr_name") or "" for actor in actors["data"]["result"]["result"]}


def fetch(url: str, token: bool = False) -> str:
    headers = {"Authorization": f"Bearer {auth_token()}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return response.read().decode()


def auth_token() -> str:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    return os.environ.get("RAY_AUTH_TOKEN") or Path(path).read_text().strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def watched_sweep(tiny_model_dir, tiny_manifests, tmp_path_factory):
    """A 2-trial sweep (searched: learning_rate, lora_r), its console output, and what the
    watcher saw. Ray exports metrics every half second here (every 10 s by default)."""
    directory = tmp_path_factory.mktemp("watched")
    raw = tiny_sweep("watched", tiny_model_dir, tiny_manifests, search={
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "lora_r": {"choices": [4, 8]},
    }, points_to_evaluate=[{}], num_samples=2)
    # 12 reports, so each trial runs for several of Ray's metric exports (two a second here):
    # a worker that ends within a second of its first report may never export at all, and
    # at 6 reports a loaded machine sometimes saw one trial's WER never exported.
    raw["trial"]["max_steps"] = 24
    config = write_sweep(directory, raw)
    port = free_port()
    watcher = Watcher(port)
    watcher.start()
    try:
        console = run_python(["-m", "sweeps.run", "--config", str(config), "--dashboard-port", str(port), "--num-cpus", "2"],
                             directory, directory / "console.log",
                             env={"RAY_metrics_report_interval_ms": "500"})  # read by the Ray processes the driver starts
    finally:
        watcher.join()
    return {"console": console, "watcher": watcher, "results": directory / "results" / "watched"}


@pytest.mark.slow
@pytest.mark.ray
def test_console_table_shows_searched_parameters_and_wers_and_a_short_best_trial(watched_sweep):
    console = watched_sweep["console"]
    headers = [line for line in console.splitlines() if line.startswith("| Trial name")]
    assert headers, console[-3000:]
    columns = [cell.strip() for cell in headers[-1].strip("|").split("|")]
    assert columns == ["Trial name", "status", "loc", "learning_rate", "lora_r", "step", "heldout WER", "canary WER"]
    best = [line for line in console.splitlines() if line.startswith("Current best trial:")][-1]
    assert re.fullmatch(r"Current best trial: \w+ with eval_wer=[\d.]+ and parameters=\{'learning_rate': [\d.e-]+, 'lora_r': [48]\}", best), best


@pytest.mark.slow
@pytest.mark.ray
def test_each_trial_exports_step_loss_and_wer_tagged_with_sweep_trial_and_parameters(watched_sweep):
    lines = watched_sweep["watcher"].metric_lines
    tags = r'\{[^}]*learning_rate="[\d.e-]+"[^}]*lora_r="[48]"[^}]*sweep="watched"[^}]*trial="\w+"[^}]*\}'
    for name in ("ray_sweep_trial_step", "ray_sweep_trial_train_loss"):
        assert any(re.fullmatch(name + tags + r" [\d.e+-]+", line) for line in lines), (name, sorted(lines)[:5])
    wers = [line for line in lines if line.startswith("ray_sweep_trial_wer{")]
    for eval_set in ("heldout", "canary"):
        assert any(f'eval_set="{eval_set}"' in line and 'system="tuned"' in line for line in wers), sorted(lines)[:5]
    # Both trials, each with its own id.
    assert len({re.search(r'trial="(\w+)"', line).group(1) for line in wers}) == 2


@pytest.mark.slow
@pytest.mark.ray
def test_the_dashboard_names_the_job_after_the_sweep_and_each_actor_after_its_trial(watched_sweep):
    watcher = watched_sweep["watcher"]
    assert [job["metadata"].get("job_name") for job in watcher.jobs if job.get("type") == "DRIVER"] == ["sweep watched"]
    labels = {name for name in watcher.actor_reprs if name.startswith("trial ")}
    assert len(labels) == 2 and all(re.fullmatch(r"trial \w+ learning_rate=[\d.e-]+ lora_r=[48]", name) for name in labels), watcher.actor_reprs


@pytest.mark.slow
@pytest.mark.ray
def test_optuna_dashboard_serves_the_sweeps_stored_study(watched_sweep):
    command = shutil.which("optuna-dashboard", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not command:
        pytest.skip('optuna-dashboard is an optional extra: pip install -e ".[dashboard]"')
    port = free_port()
    storage = f"sqlite:///{watched_sweep['results'] / 'optuna.db'}"  # the command the README gives
    server = subprocess.Popen([command, storage, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        studies = poll_json(f"http://127.0.0.1:{port}/api/studies", server)
        [study] = studies["study_summaries"]
        assert study["study_name"] == "watched" and study["directions"] == ["minimize"]
        detail = json.loads(fetch(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0"))
        assert [trial["state"] for trial in detail["trials"]] == ["Complete", "Complete"]
        assert {param["name"] for param in detail["trials"][0]["params"]} == {"learning_rate", "lora_r"}
        page = fetch(f"http://127.0.0.1:{port}/dashboard")  # the page a browser loads, and its script
        assert "<title>Optuna Dashboard</title>" in page and "/static/bundle.js" in page
        assert len(fetch(f"http://127.0.0.1:{port}/static/bundle.js")) > 100_000
    finally:
        server.terminate()
        server.wait(timeout=30)


def poll_json(url: str, server: subprocess.Popen, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"optuna-dashboard exited: {server.stderr.read().decode()[-2000:]}")
        try:
            return json.loads(fetch(url))
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"optuna-dashboard did not answer {url} within {seconds} s")
