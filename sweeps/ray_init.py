"""Start a local Ray instance, or join a cluster, for a sweep or a repro run.

A local instance listens on 127.0.0.1 only: its GCS, raylet, workers, agents, metrics
endpoints and dashboard (docs/cluster.md lists what listens where). It says where the
dashboard's login token is; a non-loopback dashboard host gets a loud warning, because
Ray's dashboard and job API run code for whoever reaches them. Joining a cluster
(``address``) changes nothing in how that cluster's Ray binds.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from trainable.config_io import ConfigError

DEFAULT_DASHBOARD_PORT = 8265
# Ray's own switch between a single-machine instance and a cluster node: off, Ray takes
# 127.0.0.1 as the node's address (as it does on macOS and Windows), and every server it
# starts binds there (ray._private.services.get_node_ip_address). Ray reads it on import.
LOCAL_ONLY_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def start_ray(address: str | None, dashboard_host: str = "127.0.0.1", dashboard_port: int | None = None,
              num_cpus: int | None = None, job_name: str = "") -> bool:
    """Start a local Ray with its dashboard (or join ``address``), as a job named
    ``job_name``; print where the dashboard is and where its login token lives. Returns
    whether this call connected Ray."""
    import ray

    if ray.is_initialized():  # e.g. a test or notebook that started Ray itself
        return False
    if address:
        context = ray.init(address=address, job_config=named_job(job_name))
        _print_dashboard(context.dashboard_url, remote=True)
        return True
    _warn_if_exposed(dashboard_host)
    port = dashboard_port or free_dashboard_port(dashboard_host)
    try:
        context = init_local_ray(num_cpus=num_cpus, include_dashboard=True, dashboard_host=dashboard_host, dashboard_port=port,
                                 job_config=named_job(job_name))
    except ValueError as error:
        if "already occupied" in str(error):
            raise ConfigError(f"--dashboard-port: {dashboard_host}:{port} is in use; pick another port") from None
        raise
    _print_dashboard(context.dashboard_url, remote=False)
    return True


def named_job(name: str):
    """This driver's job config, named ``name`` in its metadata's ``job_name``: the name the
    dashboard's Jobs page shows (and ``ray list jobs``, and its /api/jobs/)."""
    from ray.job_config import JobConfig

    return JobConfig(metadata={"job_name": name} if name else {})


def init_local_ray(**options):
    """``ray.init`` of a fresh instance on this machine, every process it starts bound to
    127.0.0.1: nothing of a local sweep or repro needs to be reachable from elsewhere."""
    import ray

    with _loopback_only():
        return ray.init(address="local", **options)


@contextmanager
def _loopback_only():
    """Ray's single-machine switch, for the processes ``ray.init`` starts (they inherit the
    environment) and for this one (Ray read the variable when it was imported, so its
    constant is set too); both are restored afterwards, so a later ``ray.init`` that joins
    a cluster works as before."""
    from ray._private import ray_constants

    saved_variable, saved_constant = os.environ.get(LOCAL_ONLY_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOCAL_ONLY_SWITCH] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_constant
        if saved_variable is None:
            os.environ.pop(LOCAL_ONLY_SWITCH, None)
        else:
            os.environ[LOCAL_ONLY_SWITCH] = saved_variable


def check_local_options(dashboard_host: str, dashboard_port: int | None, num_cpus: int | None) -> None:
    """The flags of a local Ray, checked before it starts (Ray would fail half-way, with a traceback)."""
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus: must be >= 1, got {num_cpus}")
    if dashboard_port is not None and not 1 <= dashboard_port <= 65535:
        raise ConfigError(f"--dashboard-port: must be a port number from 1 to 65535, got {dashboard_port}")
    try:  # the dashboard can listen there only if a socket can be bound to it
        family, _, _, _, address = socket.getaddrinfo(dashboard_host, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind(address)
    except (OSError, UnicodeError):  # socket.gaierror is an OSError
        raise ConfigError(f"--dashboard-host: {dashboard_host!r} is not an address of this machine") from None


def local_resources(num_cpus: int | None = None) -> dict[str, float]:
    """What a local Ray would offer (CPU, GPU, ...), found by Ray's own detection before it
    starts, so a trial that can never fit is refused first; {} where that is unavailable."""
    try:
        from ray._private.resource_and_label_spec import ResourceAndLabelSpec

        return ResourceAndLabelSpec(num_cpus=num_cpus).resolve(is_head=True, node_ip_address="127.0.0.1").to_resource_dict()
    except Exception:  # a private API: without it the check after Ray starts still applies
        return {}


def free_dashboard_port(host: str, first: int = DEFAULT_DASHBOARD_PORT, tries: int = 50) -> int:
    """8265, or the next free port: a second sweep on the same machine gets its own dashboard."""
    for port in range(first, first + tries):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
                return port
            except OSError:
                continue
    return first


def _print_dashboard(url: str | None, remote: bool) -> None:
    if not url:
        print("Ray dashboard: not running (install ray[default] for it)")
        return
    url = url if "://" in url else f"http://{url}"
    print(f"Ray dashboard: {url}" + ("  (the cluster's; from another machine use `ray dashboard cluster.yaml`)" if remote else ""))
    print(f"Ray dashboard login token: {_token_location()}")


def _token_location() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")


def _warn_if_exposed(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        bar = "!" * 78
        print(f"{bar}\nWARNING: the Ray dashboard will listen on {host}. Ray's dashboard and job API run\n"
              "arbitrary code for whoever reaches them (CVE-2023-48022). Only do this on a trusted\n"
              f"network behind a firewall; prefer 127.0.0.1 and an SSH tunnel.\n{bar}", file=sys.stderr)
