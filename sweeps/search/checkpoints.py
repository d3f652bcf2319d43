"""A trial's checkpoints in the sweep's storage, and the ones Ray's saved state does not know.

Ray registers a trial's checkpoint in the driver only after the worker has copied it to
storage, and saves that registry with the experiment state now and then (every 10 s or
more, or after ``checkpoints_to_keep`` checkpoints). A driver stopped between a checkpoint
and the next save (kill, or Ctrl-C while a report is on its way) resumes the trial from an
older checkpoint, or from step 0 when it was the first, though a complete newer one is on
disk. A half-copied one (the copy was cut) is never registered, and must not be used.

So each checkpoint carries the report it was made with and, written last, the size of
every file in it: a checkpoint whose files all have their listed sizes is complete. A
resumed trial reports those that Ray does not know again, in order, and continues from the
last: Ray's iteration count, ASHA and the Optuna study see every report once, in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainable.files import atomic_write_json

FILE_SIZES = "checkpoint_files.json"  # {file name: size in bytes} of every other file
REPORT = "tune_report.json"  # the metrics the checkpoint was reported with


def mark_complete(directory: str | Path, report: dict[str, Any]) -> None:
    """Add the report and, last, the listing that tells a complete copy of ``directory``."""
    directory = Path(directory)
    atomic_write_json(directory / REPORT, report)
    sizes = {path.name: path.stat().st_size for path in sorted(directory.iterdir()) if path.is_file() and path.name != FILE_SIZES}
    atomic_write_json(directory / FILE_SIZES, sizes)


def is_complete(directory: Path) -> bool:
    """Whether every file the listing names is there at its size (no listing: not known complete)."""
    try:
        sizes = json.loads((directory / FILE_SIZES).read_text())
        return bool(sizes) and all((directory / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, AttributeError):
        return False


def saved_report(directory: Path) -> dict[str, Any]:
    return json.loads((directory / REPORT).read_text())


def unregistered_checkpoints(trial_dir: Path, registered: str | None) -> list[Path]:
    """The complete checkpoints in ``trial_dir`` after ``registered`` (the path of the one
    Ray restores the trial from, None for none), in order, up to the first incomplete or
    missing one: Ray writes checkpoint N + 1 only after N."""
    index = _index(Path(registered).name) if registered else -1
    if index is None:  # not named as Ray names checkpoints: nothing is known to follow it
        return []
    found = []
    while is_complete(trial_dir / _name(index + 1)):
        index += 1
        found.append(trial_dir / _name(index))
    return found


def _name(index: int) -> str:
    return f"checkpoint_{index:06d}"  # Ray's name for a trial's checkpoint folder number ``index``


def _index(name: str) -> int | None:
    head, _, number = name.rpartition("_")
    return int(number) if head == "checkpoint" and number.isdigit() else None
