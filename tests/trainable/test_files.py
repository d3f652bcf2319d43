"""Result files and output folders are written whole or not at all, and a run's output
folder is checked before any work starts."""

from __future__ import annotations

import os

import pytest

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
