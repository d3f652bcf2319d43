"""Start a local Ray instance, or join a cluster, for a sweep or a repro run.

A local instance binds its dashboard to 127.0.0.1 (or the next free port there) and says
where the dashboard's login token is; a non-loopback host gets a loud warning, because
Ray's dashboard and job API run code for whoever reaches them.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from trainable.config_io import ConfigError

DEFAULT_DASHBOARD_PORT = 8265


def start_ray(address: str | None, dashboard_host: str = "127.0.0.1", dashboard_port: int | None = None,
              num_cpus: int | None = None) -> bool:
    """Start a local Ray with its dashboard (or join ``address``); print where the dashboard
    is and where its login token lives. Returns whether this call connected Ray."""
    import ray

    if ray.is_initialized():  # e.g. a test or notebook that started Ray itself
        return False
    if address:
        context = ray.init(address=address)
        _print_dashboard(context.dashboard_url, remote=True)
        return True
    _warn_if_exposed(dashboard_host)
    port = dashboard_port or free_dashboard_port(dashboard_host)
    try:
        context = ray.init(
            address="local", num_cpus=num_cpus, include_dashboard=True,
            dashboard_host=dashboard_host, dashboard_port=port,
        )
    except ValueError as error:
        if "already occupied" in str(error):
            raise ConfigError(f"--dashboard-port: {dashboard_host}:{port} is in use; pick another port") from None
        raise
    _print_dashboard(context.dashboard_url, remote=False)
    return True


def free_dashboard_port(host: str, first: int = DEFAULT_DASHBOARD_PORT, tries: int = 50) -> int:
    """8265, or the next free port: a second sweep on the same machine gets its own dashboard."""
    import socket

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
