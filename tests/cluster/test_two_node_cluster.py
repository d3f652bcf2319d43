"""Runs ``two_node_cluster_cases.py`` in a pytest process of its own.

Those cases connect this process to a two-node ``ray.cluster_utils.Cluster`` as its driver.
Ray is not safe to start again in a process where it has been shut down
(ray-project/ray#31145: background threads keep references to the old core worker), and the
main test process must stay free of Ray drivers, so the cases get a fresh interpreter. Run
them directly, one by one, with
``SWEEPS_TESTS_RAY_DRIVER_ALLOWED=1 python -m pytest tests/cluster/two_node_cluster_cases.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RAY_DRIVER_ALLOWED

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CASES = Path(__file__).with_name("two_node_cluster_cases.py")
ROOT = Path(__file__).resolve().parents[2]


def test_two_node_cluster_cases_pass_in_their_own_process():
    env = {**os.environ, RAY_DRIVER_ALLOWED: "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(CASES)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    passed = [line for line in done.stdout.splitlines() if line.startswith("PASSED ")]
    cases = CASES.read_text().count("\ndef test_")
    assert done.returncode == 0 and len(passed) == cases, done.stdout[-6000:] + done.stderr[-2000:]
