"""What a sweep or repro run needs to know when it spans several machines.

On one machine every Ray "node" shares the disk, so a local ``--storage`` path and local
manifests just work. On a real cluster each worker writes trial state to its *own* disk and
reads data from its *own* disk; nothing fails until a trial tries, and then with a message
that does not say why. The checks here fail early and say what to do instead.

Standard library only at import time (Ray and the manifest reader load inside functions),
so the sweep CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

# Filesystem types (as /proc/mounts names them) that other machines can mount too.
# A path on one of these *can* be shared; it is shared only if every node mounts it at the
# same place, which Ray's own storage check confirms once trials start.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph",
    "gpfs", "beegfs", "wekafs", "fuse.juicefs", "fuse.s3fs", "fuse.gcsfuse", "fuse.mountpoint-s3",
    "fuse.goofys", "fuse.blobfuse", "fuse.blobfuse2",
})
# How many missing paths a DataNotOnNode message lists before it only counts.
_SHOWN_MISSING = 5


class StorageError(ValueError):
    """``--storage`` is a path only this machine can read, on a run that spans machines."""


class DataNotOnNode(FileNotFoundError):
    """A manifest, audio file or local model the trial needs is not readable on this node."""


# --------------------------------------------------------------------------- storage


def is_remote_uri(storage: str) -> bool:
    """``s3://``, ``gs://``, ``abfs://``, ``hdfs://`` ...: object or distributed storage every
    node reaches over the network. ``file://`` and plain paths are local."""
    scheme = urlparse(str(storage)).scheme
    return len(scheme) > 1 and scheme != "file"  # len > 1: "C:\\..." is a Windows drive, not a scheme


def network_filesystem(path: str | os.PathLike, mounts: str | None = None) -> str | None:
    """The network filesystem type ``path`` lives on (e.g. "nfs4" for an EFS mount), or None.

    Reads /proc/mounts (Linux) unless ``mounts`` is given, so tests need no real NFS. A path
    that does not exist yet (a new sweep's storage) is judged by the mount point it would be under.
    """
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None  # not Linux: nothing to detect, the user declares shared storage instead
    target = Path(path).expanduser().resolve()  # symlinks resolved where they exist
    best_point, best_type = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point, fstype = fields[1].replace("\\040", " "), fields[2]
        if _is_under(target, point) and len(point) > len(best_point):
            best_point, best_type = point, fstype
    return best_type if best_type in NETWORK_FILESYSTEMS else None


def alive_nodes(nodes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of ``ray.nodes()`` that are up; dead nodes stay listed there for a while."""
    return [node for node in nodes if node.get("Alive", node.get("alive", False))]


def check_storage(
    storage: str,
    nodes: list[dict[str, Any]],
    *,
    shared: bool = False,
    expect_more_nodes: bool = False,
) -> None:
    """Refuse a local ``--storage`` path when trials may run on another machine.

    Ray Tune writes each trial's checkpoints and results from the node the trial runs on.
    With a local path, a worker writes to its own disk: the driver never sees those files,
    a trial retried on another node cannot find its checkpoint, and ``--resume`` loses work.

    ``nodes`` is ``ray.nodes()``. ``shared=True`` is the user's word that the path is mounted
    at the same place on every node (e.g. an NFS share); a path on a network filesystem is
    accepted without it. ``expect_more_nodes=True`` when the driver joined an existing cluster
    (``--address``): an autoscaling cluster starts with only its head node, and the GPU
    workers that join later would hit the same problem mid-sweep, after they cost money.

    Call it in the driver right after connecting to Ray, before any trial starts.
    """
    if shared or is_remote_uri(storage) or network_filesystem(storage):
        return
    alive = alive_nodes(nodes)
    if len(alive) <= 1 and not expect_more_nodes:
        return
    why = (
        f"the Ray cluster has {len(alive)} alive nodes ({describe_nodes(alive)})"
        if len(alive) > 1
        else "this driver joined an existing Ray cluster (--address), which can add worker nodes at any time"
    )
    raise StorageError(
        f"--storage {storage} is a local path, but {why}. Each trial writes its checkpoints and "
        "results on the node it runs on, so with a local path they land on that worker's disk: the "
        "driver cannot read them, a retried trial cannot find its checkpoint, and --resume loses work. "
        "Pass storage every node can reach, e.g. --storage s3://YOUR-BUCKET/sweeps (or gs://, abfs://), "
        "or a shared filesystem mounted at the same path on every node (NFS/EFS) together with "
        "--shared-storage. The results (trials.parquet, best.json, repro outputs) are still written "
        "on this driver machine."
    )


def describe_nodes(nodes: Iterable[dict[str, Any]]) -> str:
    """"10.0.0.5 (head), 10.0.1.7": short enough for an error message."""
    labels = []
    for node in nodes:
        address = node.get("NodeManagerAddress") or node.get("NodeManagerHostname") or node.get("NodeID", "?")[:8]
        is_head = "node:__internal_head__" in (node.get("Resources") or {})
        labels.append(f"{address} (head)" if is_head else str(address))
    return ", ".join(labels)


# --------------------------------------------------------------------------- where a trial ran


def trial_location() -> dict[str, str]:
    """Host name, IP and Ray node id of the process calling it, for a results row.

    The IP is what `ray status` and the dashboard show; the host name is what a user sees on the
    machine; the node id tells apart two Ray nodes on one host (as in the local tests).
    Outside Ray the IP and node id are empty strings.
    """
    location = {"node": socket.gethostname(), "node_ip": "", "node_id": ""}
    try:
        import ray

        if ray.is_initialized():
            location["node_ip"] = ray.util.get_node_ip_address()
            location["node_id"] = ray.get_runtime_context().get_node_id() or ""
    except Exception:  # no Ray, or no runtime context: the host name alone still helps
        pass
    return location


def node_label(location: dict[str, str] | None = None) -> str:
    """"gpu-worker-3 (10.0.1.7, node 5f3a9c1e)" for error messages."""
    location = location or trial_location()
    details = [part for part in (location.get("node_ip"), f"node {location['node_id'][:8]}" if location.get("node_id") else "") if part]
    return f"{location.get('node', '?')} ({', '.join(details)})" if details else location.get("node", "?")


# --------------------------------------------------------------------------- data on workers


def check_data_on_node(config: Any) -> None:
    """Fail a trial early, naming this node and the paths, when its data is not here.

    ``config`` is the trial's resolved ``TrialConfig`` (absolute paths, as the driver made
    them). On a cluster the paths the driver resolved must exist at the same place on every
    worker; if the data was not mounted or synced there, the core would stop with a manifest
    error that names no node, or (with ``on_bad_row=skip``) quietly train on whatever
    subset happens to be present.

    Checks the local model directory (a hub id is left to the download), every manifest or
    local dataset (``trainable.sources``; a hub dataset is left to the download, audio embedded
    in a dataset needs no file), and every audio file they name. With ``on_bad_row=error`` any missing audio file
    fails; with ``skip`` only a manifest whose audio is missing altogether does (a few
    missing files are then the data's own problem, which the core counts and reports).
    Only existence and read permission are checked here; decoding is the core's job.
    """
    missing: list[str] = []
    if os.path.isabs(config.model) and not os.path.isdir(config.model):
        missing.append(f"{config.model} (model directory)")
    manifests = [("train", config.train_manifest), *config.eval_manifests]
    for name, manifest in manifests:
        missing += _missing_in_manifest(name, manifest, skip_partial=config.on_bad_row == "skip")
    if missing:
        raise DataNotOnNode(_missing_message(missing))


def _missing_in_manifest(name: str, manifest: str, skip_partial: bool) -> list[str]:
    from trainable.sources import is_hub_spec, read_source, source_exists

    if is_hub_spec(manifest):
        return []
    if not source_exists(manifest):
        return [f"{manifest} ({name} manifest)"]
    utterances = read_source(manifest).utterances
    absent = [u for u in utterances if u.audio_bytes is None and not _readable(u.audio_path)]
    if not absent or (skip_partial and len(absent) < len(utterances)):
        return []
    return [f"{u.audio_path} (audio of {u.source})" for u in absent]


def _missing_message(missing: list[str]) -> str:
    shown = "; ".join(missing[:_SHOWN_MISSING])
    more = f"; and {len(missing) - _SHOWN_MISSING} more" if len(missing) > _SHOWN_MISSING else ""
    return (
        f"data not readable on node {node_label()}: {len(missing)} path(s) missing: {shown}{more}. "
        "Every node that runs trials must see the model, manifests and audio at the same absolute "
        "paths as the driver: mount a shared filesystem (NFS/EFS) at the same path on every node, "
        "or copy the data with file_mounts in cluster.yaml (see docs/cluster.md)."
    )


def _readable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _is_under(path: Path, mount_point: str) -> bool:
    return mount_point == "/" or path == Path(mount_point) or Path(mount_point) in path.parents
