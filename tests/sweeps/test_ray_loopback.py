"""A local Ray started by a sweep or by repro listens on loopback addresses only.

Each test starts Ray in a child process through the project's own code (the sweep's
``start_ray``, repro's ``run_all_seeds``), gets a worker and an actor running, then lists
the listening sockets of that child's process tree only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from drivers import run_python
from listening import can_inspect, is_loopback

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # each starts a Ray instance: 10 s or more

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

SWEEP = """
import json, os, sys, ray
from listening import listening_sockets, process_tree
from sweeps.ray_init import free_dashboard_port, start_ray

start_ray(None, "127.0.0.1", free_dashboard_port("127.0.0.1", 18265), num_cpus=1)
try:
    @ray.remote
    class Probe:
        def ping(self):
            return os.getpid()

    @ray.remote
    def task():
        return os.getpid()

    ray.get(task.remote()); ray.get(Probe.remote().ping.remote())
    sys.stdout.write("SOCKETS " + json.dumps(listening_sockets(process_tree(os.getpid()))) + "\\n")
finally:
    ray.shutdown()
"""

REPRO = """
import json, os, sys
from listening import listening_sockets, process_tree
from sweeps.repro.seeds import run_all_seeds
from trainable.config import TrialConfig

driver = os.getpid()

def probe(config):  # runs as a seed task while the repro's Ray is up
    return {"sockets": listening_sockets(process_tree(driver)), "elapsed_seconds": 0.0, "steps": 0}

finished, failed = run_all_seeds([(1, False, TrialConfig())], None, 1, 0, task_fn=probe)
assert not failed, failed
sys.stdout.write("SOCKETS " + json.dumps(finished[0]["sockets"]) + "\\n")
"""


def sockets_of(script: str, log: Path) -> list[dict]:
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])}
    output = run_python(["-c", script], ROOT, log, timeout=300, env=env)
    line = next(line for line in output.splitlines() if line.startswith("SOCKETS "))
    return json.loads(line[len("SOCKETS "):])


@pytest.mark.parametrize("script", [SWEEP, REPRO], ids=["sweep", "repro"])
def test_a_local_ray_listens_on_loopback_only(script, tmp_path):
    reason = can_inspect()
    if reason:
        pytest.skip(reason)
    sockets = sockets_of(script, tmp_path / "driver.log")
    names = {name for socket in sockets for name in socket["processes"]}
    assert {"gcs_server", "raylet"} <= names, f"Ray's servers not found among {sockets}"
    exposed = [socket for socket in sockets if not is_loopback(socket["address"])]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_the_loopback_switch_is_restored_after_init(monkeypatch):
    """Joining a cluster later in the same process must find Ray's switch as it was."""
    from ray._private import ray_constants

    from sweeps import ray_init

    monkeypatch.delenv(ray_init.LOCAL_ONLY_SWITCH, raising=False)
    before = ray_constants.ENABLE_RAY_CLUSTER
    with ray_init._loopback_only():
        assert os.environ[ray_init.LOCAL_ONLY_SWITCH] == "0" and ray_constants.ENABLE_RAY_CLUSTER is False
    assert ray_init.LOCAL_ONLY_SWITCH not in os.environ and ray_constants.ENABLE_RAY_CLUSTER == before
