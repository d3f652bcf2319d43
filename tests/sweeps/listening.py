"""Which sockets a process tree listens on, read from /proc and ``ss`` (iproute2).

Used by tests that start Ray: they look only at the processes they started (the tree
under one pid), never at other processes on the machine.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess


def can_inspect() -> str | None:
    """None when sockets can be listed here, else why not (a reason for pytest.skip)."""
    if not os.path.isdir("/proc/self"):
        return "no /proc on this platform: process trees cannot be read"
    if shutil.which("ss") is None:
        return "ss (iproute2) is not installed"
    return None


def process_tree(root: int) -> set[int]:
    """``root`` and every process below it (Ray's GCS, raylet, agents and workers descend from the driver)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(parent, []).append(int(entry))
    tree, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


def listening_sockets(pids: set[int]) -> list[dict]:
    """TCP and UDP sockets in LISTEN (or bound, for UDP) state owned by ``pids``: protocol,
    address, port and the owning process names."""
    out = subprocess.run(["ss", "-H", "-l", "-t", "-u", "-n", "-p"], capture_output=True, text=True, check=True).stdout
    sockets = []
    for line in out.splitlines():
        owners = [(name, int(pid)) for name, pid in re.findall(r'\("([^"]*)",pid=(\d+)', line)]
        if not any(pid in pids for _, pid in owners):
            continue
        fields = line.split()
        address, _, port = fields[4].rpartition(":")
        sockets.append({"protocol": fields[0], "address": address.strip("[]"), "port": port,
                        "processes": sorted({name for name, pid in owners if pid in pids})})
    return sockets


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4 loopback written as an IPv6-mapped address (::ffff:127.0.0.1)."""
    if address in ("*", "0.0.0.0", "::"):
        return False
    address = address.split("%", 1)[0]
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback
