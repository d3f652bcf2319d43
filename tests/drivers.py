"""Child Python processes for the tests that need a Ray driver: the test process never starts
one (conftest.py says why). A child's stdout and stderr go to one log file, so a line a test
parses is written in one ``sys.stdout.write`` (``print`` writes the newline apart, and another
thread's stderr may land between). A child that runs past its time is killed with every
process it started (Ray's included), by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def start_python(args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python <args>`` from ``cwd``, unbuffered, its output appended to ``log``; ``env`` adds
    to this process's environment."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0", **(env or {})}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)


def run_python(args: list[str], cwd: Path, log: Path, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """``python <args>`` run to the end: it must exit 0 within ``timeout`` seconds (else it is
    killed with its process tree). Returns the log's text."""
    process = start_python(args, cwd, log, env)
    try:
        assert process.wait(timeout=timeout) == 0, failure_text(Path(log).read_text())
    finally:
        if process.poll() is None:
            kill_tree(process)
    return Path(log).read_text()


def failure_text(output: str) -> str:
    """A child pytest's FAILURES section, where its assertion is (its tail holds only the
    captured logs of passing cases); any other child's last 6,000 characters."""
    start = output.find("= FAILURES =")
    return output[max(start - 100, 0):][:8000] if start >= 0 else output[-6000:]


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the child (as a crash would), then the processes it started (Ray's), by pid."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    time.sleep(2)  # let raylet and workers notice their driver is gone
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=30)
