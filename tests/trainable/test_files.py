"""Result files and output folders are written whole or not at all, and a run's output
folder is checked before any work starts."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from trainable.config import REPO_ROOT
from trainable.config_io import ConfigError
from trainable.files import atomic_write_json, staged_directory
from trainable.preflight import check_run_output_dir, check_writable_folder


def test_a_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("{}")

    def refuse(*args):
        raise OSError("rename refused")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write_json(target, {"wer": 0.1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"] and target.read_text() == "{}"


def test_a_staged_folder_replaces_the_old_one_only_on_success(tmp_path):
    out = tmp_path / "run"
    with staged_directory(out) as staging:
        (staging / "summary.json").write_text("first")
    with pytest.raises(RuntimeError):
        with staged_directory(out) as staging:
            (staging / "summary.json").write_text("second")
            raise RuntimeError("the run failed")
    assert (out / "summary.json").read_text() == "first"
    with staged_directory(out) as staging:
        (staging / "summary.json").write_text("third")
    assert (out / "summary.json").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_the_old_folder_comes_back_when_the_new_one_cannot_be_moved_in(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("old")
    real_rename = os.rename

    def rename(source, target):
        if str(source).endswith(".staging"):
            raise OSError("no space left")
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="no space left"):
        with staged_directory(out) as staging:
            (staging / "summary.json").write_text("new")
    assert (out / "summary.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_earlier_runs_folder_may_be_replaced_and_any_other_is_refused(tmp_path):
    earlier = tmp_path / "earlier"
    (earlier / "lora_adapter").mkdir(parents=True)
    for name in ("summary.json", "heldout_baseline.json", "heldout_tuned.json"):
        (earlier / name).write_text("{}")
    check_run_output_dir(earlier)
    check_run_output_dir(tmp_path / "new" / "deep")
    (tmp_path / "empty").mkdir()
    check_run_output_dir(tmp_path / "empty")
    with pytest.raises(ConfigError, match=r"output_dir: .* holds files that are not a run's outputs \(earlier, empty"):
        check_run_output_dir(tmp_path)


def test_a_file_in_the_way_of_a_folder_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="--output-dir: .*f is a file, not a folder"):
        check_writable_folder(tmp_path / "f", "--output-dir")
    with pytest.raises(ConfigError, match="f is a file, so .*f/a/b cannot be created"):
        check_writable_folder(tmp_path / "f" / "a" / "b", "--output-dir")


def killed_while_staging(parent, name: str) -> str:
    """The staging folder a process on this host leaves when it is killed (SIGKILL) while
    writing ``parent/name`` through ``staged_directory``; its name."""
    writer = ("import sys, time\nfrom trainable.files import staged_directory\n"
              "with staged_directory(sys.argv[1]) as staging:\n"
              "    (staging / 'lora_adapter').mkdir()\n    print(staging.name, flush=True)\n    time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", writer, str(parent / name)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    staged = process.stdout.readline().strip()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert staged and (parent / staged / "lora_adapter").is_dir()
    return staged


def test_the_next_run_removes_staging_left_by_a_killed_process_and_keeps_any_it_cannot_judge(tmp_path, caplog):
    """A seed killed while writing leaves ``.seed_1.<pid>@<host>.staging``; the next run that
    writes beside it removes it, in one logged line. A folder whose process still runs here, one
    made on another host (a shared disk) and one whose name records no host are kept."""
    abandoned = killed_while_staging(tmp_path, "seed_1")
    assert abandoned.startswith(".seed_1.") and abandoned.endswith(f"@{socket.gethostname()}.staging")
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_pid = int(abandoned.split(".")[2].split("@")[0])
        kept = [f".seed_2.{running.pid}@{socket.gethostname()}.staging", f".seed_3.{dead_pid}@another-node.staging",
                f".seed_4.{dead_pid}.staging"]
        for name in kept:
            (tmp_path / name).mkdir()
        with caplog.at_level(logging.WARNING, logger="trainable.files"):
            with staged_directory(tmp_path / "seed_5") as staging:
                (staging / "summary.json").write_text("{}")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "seed_5"])
        lines = [r.getMessage() for r in caplog.records]
        assert lines == [f"removed 1 staging folder in {tmp_path} left by a process no longer running on this host "
                         f"(killed while writing its outputs): {abandoned}"]
    finally:
        running.kill()
        running.wait(timeout=30)
