"""Result files are written whole or not at all.

Every report, table, plot, checkpoint and results file goes through ``atomic_output``: the
content is written to a hidden temporary file beside the target and renamed over it, so a
crash, a kill or a full disk never leaves a half-written file that a later run or a reader
would take for a finished one. The temporary file is removed when writing fails.

A run's output folder is written the same way (``staged_directory``): everything goes into
a hidden staging folder beside it, which replaces the folder only once the run succeeded,
so a folder never mixes one run's adapter with another run's summary. A staging folder is
named after the process and host that write it (``.run.4242@node-1.staging``), so a later
run can tell one left by a killed process from one still being written
(``remove_abandoned_staging``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

# ``.<folder name>.<pid>@<host>.staging``: a host name holds no "@" and no "/".
STAGING_NAME = re.compile(r"^\.(?P<folder>.+)\.(?P<pid>\d+)@(?P<host>[^@/]+)\.staging$")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Strict JSON (numpy values as Python ones, NaN and infinities as null), indented."""
    atomic_write_text(path, json.dumps(json_ready(data), indent=2, allow_nan=False) + "\n")


def json_ready(value: Any) -> Any:
    """What strict JSON parsers accept: numpy scalars and arrays to Python values, a
    non-finite float (a metric never reported, a loss that diverged) to null."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@contextmanager
def staged_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path``; on success it becomes ``path`` (an
    earlier folder there is replaced only then), on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    removed = remove_abandoned_staging(path.parent)
    if removed:
        log.warning("%s", removed_line(removed, path.parent))
    staging = path.with_name(f".{path.name}.{os.getpid()}@{socket.gethostname()}.staging")
    _remove(staging)  # left by a killed process that had the same pid
    staging.mkdir()
    try:
        yield staging
        _replace_directory(staging, path)
    finally:
        _remove(staging)


def remove_abandoned_staging(parent: str | Path) -> list[str]:
    """Remove the staging folders in ``parent`` whose writer is gone: made on this host by a
    process that no longer runs (killed mid-write: kill -9, out of memory). Returns their names.

    A folder made on another host is left alone (a shared disk: this host's processes say
    nothing about that host's), and so is one whose pid runs here, even when the pid was
    reused by another program: removing a folder a run is still writing would break that
    run, while a kept leftover goes once that pid exits. A name without a host is left too."""
    parent, host = Path(parent), socket.gethostname()
    removed = []
    for entry in sorted(parent.iterdir()) if parent.is_dir() else []:
        owner = STAGING_NAME.match(entry.name)
        if owner and owner["host"] == host and entry.is_dir() and not _process_runs(int(owner["pid"])):
            _remove(entry)
            removed.append(entry.name)
    return removed


def removed_line(removed: list[str], parent: str | Path) -> str:
    """The one line that says which abandoned staging folders were removed, and why."""
    noun = "folder" if len(removed) == 1 else "folders"
    return (f"removed {len(removed)} staging {noun} in {parent} left by a process no longer running on this host "
            f"(killed while writing its outputs): {', '.join(removed)}")


def _process_runs(pid: int) -> bool:
    """Whether ``pid`` is a process on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: a number no pid can be
        return False
    except PermissionError:
        return True
    return True


def _replace_directory(new: Path, path: Path) -> None:
    """Rename ``new`` to ``path``. An existing ``path`` is first renamed aside and deleted
    after; if the second rename fails, it is put back."""
    if not path.exists():
        os.rename(new, path)
        return
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    _remove(old)
    os.rename(path, old)
    try:
        os.rename(new, path)
    except OSError:
        os.rename(old, path)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
