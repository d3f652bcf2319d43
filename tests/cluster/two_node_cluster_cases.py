"""Two Ray nodes on this machine (ray.cluster_utils.Cluster): trials pinned to the second node,
the storage check against the live cluster, a worker without the data, and losing a node.

Trials run the real Tune glue (sweeps.search.trial.train_trial) on the tiny random Moonshine. On
one machine every node shares the disk, so what these tests cannot show is a worker that truly
lacks the storage or the data: docs/cluster.md lists what only a real cluster verifies.

The pytest process running these cases is the cluster's driver, so it runs them alone:
``test_two_node_cluster.py`` starts it (tests/conftest.py refuses ``ray.init`` elsewhere).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from sweeps.cluster import DataNotOnNode, StorageError, check_data_on_node, check_storage, trial_location  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # each starts a Ray instance: 10 s or more
# A hung trial fails the test instead of hanging CI. The budget is generous because Ray runs
# trial workers at nice 15: beside other busy processes a trial gets a small share of a CPU,
# and the node-loss sweep, 10-15 s alone, ran past 300 s beside two busy processes on 2 cores.
TIME_BUDGET_S = 900


@pytest.fixture(scope="module")
def two_nodes():
    """Head (1 CPU, custom resource "head") + node 2 (1 CPU, custom resource "node2")."""
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "another test left Ray running"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    try:
        node2 = cluster.add_node(num_cpus=1, resources={"node2": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        # The test's own trainable wrapper is shipped by value: workers cannot import test modules.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        yield cluster, node2
    finally:
        ray.shutdown()
        cluster.shutdown()  # only the processes this Cluster started


def recipe(config, **changes) -> dict:
    """The Tune config of a trial: the whole recipe minus what the glue sets per trial."""
    fields = config.replace(**changes).to_dict()
    return {key: value for key, value in fields.items() if key not in ("output_dir", "num_threads")}


def test_local_storage_is_refused_on_the_live_two_node_cluster(two_nodes, tmp_path):
    nodes = ray.nodes()
    with pytest.raises(StorageError, match="2 alive nodes"):
        check_storage(str(tmp_path / "ray"), nodes)
    check_storage("s3://bucket/sweeps", nodes)


def test_a_worker_without_the_data_names_itself_and_the_path(two_nodes, tiny_config, tmp_path):
    _, node2 = two_nodes
    config = tiny_config.replace(train_manifest=str(tmp_path / "only-on-the-driver" / "train.jsonl"))
    on_node2 = ray.remote(num_cpus=0, resources={"node2": 0.01}, max_retries=0)(check_data_on_node)
    with pytest.raises(DataNotOnNode) as error:
        ray.get(on_node2.remote(config))
    message = str(error.value)
    assert f"node {node2.node_id[:8]}" in message and node2.node_ip_address in message
    assert "only-on-the-driver/train.jsonl (train manifest)" in message


def test_trial_location_inside_a_task_names_the_node_it_ran_on(two_nodes):
    import socket

    _, node2 = two_nodes
    on_node2 = ray.remote(num_cpus=0, resources={"node2": 0.01})(trial_location)
    location = ray.get(on_node2.remote())
    assert location == {"node": socket.gethostname(), "node_ip": node2.node_ip_address, "node_id": node2.node_id}


def test_trials_pinned_to_node2_run_there_and_their_rows_say_so(two_nodes, tiny_config, tmp_path):
    from sweeps.search.results import trials_table
    from sweeps.search.config import SweepConfig
    from sweeps.search.trial import train_trial

    _, node2 = two_nodes
    storage = tmp_path / "ray"
    tuner = tune.Tuner(
        tune.with_resources(train_trial, {"cpu": 0.5, "node2": 0.01}),  # two trials share node 2
        param_space={**recipe(tiny_config), "seed": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(time_budget_s=TIME_BUDGET_S),
        run_config=tune.RunConfig(name="pinned", storage_path=str(storage), verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors, grid.errors

    rows = trials_table(str(storage / "pinned"), SweepConfig(name="pinned", trial=tiny_config))
    assert len(rows) == 2
    assert set(rows["status"]) == {"TERMINATED"}
    assert set(rows["node_id"]) == {node2.node_id}
    assert rows["eval_wer"].notna().all()
    assert (rows["num_threads"] == 1).all()  # torch threads follow the trial's CPUs


def held_train_trial(config: dict) -> None:
    """train_trial, instrumented: every report's node and step go to ``report_log``, and a
    trial on ``hold_on_node`` stops after its first checkpoint, so the test can take that
    node away mid-trial (the retry elsewhere runs normally).

    A report's line is written before the report is handed to Tune: ``tune.report`` returns
    only when the driver asks for the next result, which it does after the checkpoint
    callback has already killed the node, so a line written after it would depend on the
    node's worker outliving its raylet."""
    from sweeps.search import trial as glue

    config = dict(config)
    hold_on_node, report_log = config.pop("hold_on_node"), config.pop("report_log")
    forward = glue.TuneReporter.__call__

    def report_then_hold(self, metrics, checkpoint_dir):
        node_id = ray.get_runtime_context().get_node_id()
        with open(report_log, "a") as log:
            log.write(json.dumps({"node_id": node_id, "step": metrics.get("step")}) + "\n")
        forward(self, metrics, checkpoint_dir)  # the checkpoint is in storage before the driver sees the report
        if checkpoint_dir and node_id == hold_on_node:
            time.sleep(TIME_BUDGET_S)  # until the test removes this node

    glue.TuneReporter.__call__ = report_then_hold
    glue.train_trial(config)


@ray.remote(num_cpus=1, resources={"head": 0.01})
class HeadCpuHolder:
    """Holds the head's only CPU so the trial's first attempt can only start on node 2."""

    def ready(self) -> bool:
        return True


class RemoveNodeAtFirstCheckpoint(tune.Callback):
    """In the driver: when the trial on ``node`` has saved a checkpoint, kill that node and
    free the head's CPU for the retry."""

    def __init__(self, cluster, node, holder):
        self.cluster, self.node, self.holder, self.removed_at_step = cluster, node, holder, None

    def __reduce__(self):
        """Tune saves its callbacks with the experiment; the saved copy needs no live cluster."""
        return (type(self), (None, None, None))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        last = trial.last_result or {}
        if self.removed_at_step is None and last.get("node_id") == self.node.node_id:
            self.cluster.remove_node(self.node, allow_graceful=False)  # SIGKILL raylet and its workers
            ray.kill(self.holder)
            self.removed_at_step = last.get("step")


def test_losing_node2_mid_trial_retries_it_on_the_head_from_its_checkpoint(two_nodes, tiny_config, tmp_path):
    """Must run last in this module: it removes node 2."""
    cluster, node2 = two_nodes
    head_id = cluster.head_node.node_id
    holder = HeadCpuHolder.remote()
    assert ray.get(holder.ready.remote(), timeout=60)

    killer = RemoveNodeAtFirstCheckpoint(cluster, node2, holder)
    report_log = tmp_path / "reports.jsonl"
    tuner = tune.Tuner(
        tune.with_resources(held_train_trial, {"cpu": 1}),
        param_space={
            **recipe(tiny_config, max_steps=3, eval_every=1),
            "hold_on_node": node2.node_id,
            "report_log": str(report_log),
        },
        tune_config=tune.TuneConfig(time_budget_s=TIME_BUDGET_S),
        run_config=tune.RunConfig(
            name="node-loss", storage_path=str(tmp_path / "ray"), verbose=0, callbacks=[killer],
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    grid = tuner.fit()

    assert killer.removed_at_step == 1
    assert not grid.errors, grid.errors
    [result] = list(grid)
    assert result.metrics["completed"], f"unfinished at step {result.metrics.get('step')} (time_budget_s={TIME_BUDGET_S})"
    assert result.metrics["node_id"] == head_id
    attempts = [json.loads(line) for line in (Path(result.path) / "attempts.jsonl").read_text().splitlines()]
    assert [attempt["node_id"] for attempt in attempts] == [node2.node_id, head_id]
    assert attempts[0]["resumed_from"] is None and attempts[1]["resumed_from"]
    reports = [json.loads(line) for line in report_log.read_text().splitlines()]
    assert [r["step"] for r in reports if r["node_id"] == node2.node_id] == [1]
    assert [r["step"] for r in reports if r["node_id"] == head_id][0] == 2  # continued, not trained again
    assert reports[-1]["step"] == 3
