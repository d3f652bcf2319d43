"""cluster.yaml passes Ray's own launcher schema, offline, and a typo in it does not."""

from __future__ import annotations

import copy
import socket

import jsonschema
import pytest
import yaml

from trainable.config import REPO_ROOT

CLUSTER_YAML = REPO_ROOT / "cluster.yaml"


def validate(config: dict) -> dict:
    """What `ray up` checks before touching the cloud: defaults merged, then the schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach AWS (or anything) fails the test instead of hanging on it."""

    def refuse(*args, **kwargs):
        raise AssertionError("validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_cluster_yaml_validates_offline(cluster_config, no_network):
    prepared = validate(cluster_config)
    assert prepared["provider"]["type"] == "aws"


def test_gpu_workers_autoscale_with_declared_resources(cluster_config):
    prepared = validate(cluster_config)
    workers = prepared["available_node_types"]["gpu_worker"]
    assert workers["resources"] == {"CPU": 4, "GPU": 1}
    assert workers["min_workers"] == 0 < workers["max_workers"]
    assert prepared["available_node_types"][prepared["head_node_type"]]["resources"].get("GPU", 0) == 0


def test_setup_installs_torch_before_the_project_on_every_node(cluster_config):
    prepared = validate(cluster_config)
    for kind in ("head_setup_commands", "worker_setup_commands"):
        commands = prepared[kind]  # setup_commands merged in front, as `ray up` runs them
        torch_at = next(i for i, c in enumerate(commands) if "torch==" in c and "--index-url" in c)
        project_at = next(i for i, c in enumerate(commands) if "pip install" in c and "-e " in c)
        assert torch_at < project_at, kind
    assert "whl/cu" in " ".join(prepared["worker_setup_commands"])


def test_dashboard_is_not_exposed(cluster_config):
    """Ray's default template starts the head with --dashboard-host=0.0.0.0; ours must not."""
    prepared = validate(cluster_config)
    start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start
    rules = prepared["provider"].get("security_group", {}).get("IpPermissions", [])
    assert not [rule for rule in rules if rule.get("FromPort") in (8265, 10001)]


def test_project_is_mounted_at_one_path_on_every_node(cluster_config):
    assert cluster_config["file_mounts"]["~/moonshine-lora-sweeps"] == "."
    installs = [c for c in cluster_config["head_setup_commands"] if "-e " in c]
    assert installs and "~/moonshine-lora-sweeps" in installs[0]


@pytest.mark.parametrize("where", ["top", "node_type", "provider"])
def test_misspelled_key_fails_validation(cluster_config, where):
    broken = copy.deepcopy(cluster_config)
    if where == "top":
        broken["setup_comands"] = broken.pop("setup_commands")
    elif where == "node_type":
        worker = broken["available_node_types"]["gpu_worker"]
        worker["max_worker"] = worker.pop("max_workers")
    else:
        broken["provider"]["security_group"] = {"IpPermission": []}
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
