"""check_storage, network-filesystem detection, trial location and data-on-node checks, without Ray."""

from __future__ import annotations

import json
import socket

import pytest

from sweeps.cluster import (
    DataNotOnNode,
    StorageError,
    check_data_on_node,
    check_storage,
    is_remote_uri,
    network_filesystem,
    node_label,
    trial_location,
)

HEAD = {"NodeID": "a" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.5", "Resources": {"CPU": 0.0, "node:__internal_head__": 1.0}}
WORKER = {"NodeID": "b" * 56, "Alive": True, "NodeManagerAddress": "10.0.1.7", "Resources": {"CPU": 4.0, "GPU": 1.0}}
DEAD = {**WORKER, "NodeID": "c" * 56, "Alive": False, "NodeManagerAddress": "10.0.1.8"}

MOUNTS = """\
overlay / overlay rw,relatime 0 0
/dev/nvme0n1p1 /home ext4 rw 0 0
fs-0123.efs.us-west-2.amazonaws.com:/ /mnt/efs nfs4 rw,vers=4.1 0 0
/dev/nvme1n1 /mnt/efs/scratch ext4 rw 0 0
"""


@pytest.mark.parametrize("storage", ["s3://bucket/sweeps", "gs://bucket/x", "abfs://c@acct.dfs.core.windows.net/x", "hdfs://nn:8020/x"])
def test_remote_storage_passes_on_a_cluster(storage):
    check_storage(storage, [HEAD, WORKER])
    check_storage(storage, [HEAD], expect_more_nodes=True)
    assert is_remote_uri(storage)


@pytest.mark.parametrize("storage", ["/home/me/results", "results/demo/ray", "file:///home/me/results", "C:\\results"])
def test_local_path_is_not_remote(storage):
    assert not is_remote_uri(storage)


def test_local_storage_on_multi_node_cluster_says_why_and_what_to_pass(tmp_path):
    with pytest.raises(StorageError) as error:
        check_storage(str(tmp_path), [HEAD, WORKER])
    message = str(error.value)
    assert str(tmp_path) in message
    assert "2 alive nodes" in message and "10.0.0.5 (head)" in message and "10.0.1.7" in message
    assert "driver cannot read" in message  # why
    assert "s3://" in message and "--shared-storage" in message  # what to pass


def test_local_storage_on_one_machine_is_fine(tmp_path):
    check_storage(str(tmp_path), [HEAD])
    check_storage(str(tmp_path), [HEAD, DEAD])  # a dead node runs no trials


def test_joining_an_autoscaling_cluster_with_local_storage_fails_before_workers_exist(tmp_path):
    with pytest.raises(StorageError, match="joined an existing Ray cluster"):
        check_storage(str(tmp_path), [HEAD], expect_more_nodes=True)


def test_declared_shared_path_passes(tmp_path):
    check_storage(str(tmp_path), [HEAD, WORKER], shared=True)


def test_network_filesystem_detected_from_mounts():
    assert network_filesystem("/mnt/efs/sweeps/not-yet-created", MOUNTS) == "nfs4"
    assert network_filesystem("/mnt/efs", MOUNTS) == "nfs4"
    assert network_filesystem("/mnt/efs/scratch/x", MOUNTS) is None  # a local disk mounted inside the share
    assert network_filesystem("/home/me/results", MOUNTS) is None
    assert network_filesystem("/mnt/efsx", MOUNTS) is None  # a prefix of the mount point is not inside it


def test_path_on_network_filesystem_passes_without_the_flag(tmp_path, monkeypatch):
    import sweeps.cluster as cluster

    monkeypatch.setattr(cluster, "network_filesystem", lambda path, mounts=None: "nfs4")
    check_storage(str(tmp_path), [HEAD, WORKER])


def test_trial_location_outside_ray_names_the_host():
    location = trial_location()
    assert location["node"] == socket.gethostname()
    assert location["node_ip"] == "" and location["node_id"] == ""
    assert node_label({"node": "gpu-3", "node_ip": "10.0.1.7", "node_id": "5f3a9c1e77"}) == "gpu-3 (10.0.1.7, node 5f3a9c1e)"


# --------------------------------------------------------------------------- data on this node


def test_data_present_passes(tiny_config):
    check_data_on_node(tiny_config.resolved())


def test_missing_manifest_is_named_with_the_node(tiny_config, tmp_path):
    config = tiny_config.replace(train_manifest=str(tmp_path / "nowhere" / "train.jsonl"))
    with pytest.raises(DataNotOnNode) as error:
        check_data_on_node(config)
    message = str(error.value)
    assert f"{tmp_path}/nowhere/train.jsonl (train manifest)" in message
    assert socket.gethostname() in message and "file_mounts" in message


def _manifest_with_missing_audio(tiny_manifests, tmp_path, missing: int) -> str:
    rows = [json.loads(line) for line in tiny_manifests["heldout"].read_text().splitlines()]
    directory = tiny_manifests["heldout"].parent
    for row in rows:
        row["audio_filepath"] = str(directory / row["audio_filepath"])
    for row in rows[:missing]:
        row["audio_filepath"] = str(tmp_path / "not-synced" / "x.wav")
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_missing_audio_is_named_with_its_manifest_line(tiny_config, tiny_manifests, tmp_path):
    manifest = _manifest_with_missing_audio(tiny_manifests, tmp_path, missing=1)
    config = tiny_config.replace(eval_manifests=(("heldout", manifest),))
    with pytest.raises(DataNotOnNode, match=rf"not-synced/x.wav \(audio of {manifest}:1\)"):
        check_data_on_node(config)


def test_skip_mode_tolerates_a_few_missing_files_but_not_all(tiny_config, tiny_manifests, tmp_path):
    config = tiny_config.replace(on_bad_row="skip")
    some = _manifest_with_missing_audio(tiny_manifests, tmp_path, missing=1)
    check_data_on_node(config.replace(eval_manifests=(("heldout", some),)))
    every = _manifest_with_missing_audio(tiny_manifests, tmp_path, missing=4)
    with pytest.raises(DataNotOnNode, match="4 path"):
        check_data_on_node(config.replace(eval_manifests=(("heldout", every),)))


def test_missing_local_model_directory_is_named_but_hub_ids_are_left_alone(tiny_config, tmp_path):
    with pytest.raises(DataNotOnNode, match="model directory"):
        check_data_on_node(tiny_config.replace(model=str(tmp_path / "models" / "tiny")))
    check_data_on_node(tiny_config.replace(model="UsefulSensors/moonshine-tiny"))


def test_long_lists_are_cut(tiny_config, tmp_path):
    config = tiny_config.replace(
        train_manifest=str(tmp_path / "t.jsonl"),
        eval_manifests=tuple((f"e{i}", str(tmp_path / f"e{i}.jsonl")) for i in range(7)),
    )
    with pytest.raises(DataNotOnNode, match=r"8 path\(s\) missing: .*; and 3 more"):
        check_data_on_node(config)


def test_datasets_are_checked_like_manifests(tiny_config, tiny_manifests, tmp_path):
    """A local dataset's audio files must be on the node; embedded audio and hub ids need nothing."""
    import shutil

    folder = tmp_path / "af"
    rows = [json.loads(line) for line in tiny_manifests["heldout"].read_text().splitlines()]
    (folder / "clips").mkdir(parents=True)
    for row in rows[1:]:
        shutil.copyfile(tiny_manifests["heldout"].parent / row["audio_filepath"], folder / "clips" / f"{row['id']}.wav")
    (folder / "metadata.csv").write_text("file_name,text\n" + "".join(f"clips/{r['id']}.wav,{r['text']}\n" for r in rows))
    with pytest.raises(DataNotOnNode, match=rf"clips/{rows[0]['id']}.wav \(audio of {folder}\[0\]\)"):
        check_data_on_node(tiny_config.replace(eval_manifests=(("heldout", str(folder)),)))
    check_data_on_node(tiny_config.replace(eval_manifests=(("heldout", "someone/speech:test"),)))
    with pytest.raises(DataNotOnNode, match=rf"{tmp_path}/gone:test \(heldout manifest\)"):
        check_data_on_node(tiny_config.replace(eval_manifests=(("heldout", f"{tmp_path}/gone:test"),)))
