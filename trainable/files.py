"""Result files are written whole or not at all.

Every report, table, plot, checkpoint and results file goes through ``atomic_output``: the
content is written to a hidden temporary file beside the target and renamed over it, so a
crash, a kill or a full disk never leaves a half-written file that a later run or a reader
would take for a finished one. The temporary file is removed when writing fails.

A run's output folder is written the same way (``staged_directory``): everything goes into
a hidden staging folder beside it, which replaces the folder only once the run succeeded,
so a folder never mixes one run's adapter with another run's summary.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


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
    staging = path.with_name(f".{path.name}.{os.getpid()}.staging")
    _remove(staging)  # left by a killed process that had the same pid
    staging.mkdir()
    try:
        yield staging
        _replace_directory(staging, path)
    finally:
        _remove(staging)


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
