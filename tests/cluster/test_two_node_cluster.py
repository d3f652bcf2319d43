"""Runs ``two_node_cluster_cases.py`` in a pytest process of its own.

Those cases connect this process to a two-node ``ray.cluster_utils.Cluster`` as its driver.
Ray is not safe to start again in a process where it has been shut down
(ray-project/ray#31145: background threads keep references to the old core worker), and the
main test process must stay free of Ray drivers, so the cases get a fresh interpreter. Run
them directly, one by one, with
``SWEEPS_TESTS_RAY_DRIVER_ALLOWED=1 python -m pytest tests/cluster/two_node_cluster_cases.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import RAY_DRIVER_ALLOWED
from drivers import run_python

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CASES = Path(__file__).with_name("two_node_cluster_cases.py")
ROOT = Path(__file__).resolve().parents[2]


def test_two_node_cluster_cases_pass_in_their_own_process(tmp_path):
    # Two sweeps of up to TIME_BUDGET_S (900 s) each, plus the cluster and the quick cases.
    output = run_python(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(CASES)], ROOT, tmp_path / "cases.log",
                        timeout=2400, env={RAY_DRIVER_ALLOWED: "1"})
    passed = [line for line in output.splitlines() if line.startswith("PASSED ")]
    assert len(passed) == CASES.read_text().count("\ndef test_"), output[-6000:]
