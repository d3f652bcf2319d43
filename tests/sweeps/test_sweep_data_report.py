"""The sweep's data report: once, on the driver, before Ray; strict_text stops the sweep there."""

from __future__ import annotations

import json

import pytest

from conftest import make_rows, write_manifest
from sweeps.data_report import REPORT_FILE, report_sweep_data, summary_section
from trainable.config_io import ConfigError


def test_report_is_written_printed_and_enforced(tiny_config, tmp_path, capsys):
    rows = make_rows(tmp_path, "train", 3, seed=7)
    rows[0]["text"] = "Hello, World!"
    config = tiny_config.replace(train_manifest=str(write_manifest(tmp_path / "train.jsonl", rows))).resolved()

    report = report_sweep_data(config, tmp_path / "results")
    saved = json.loads((tmp_path / "results" / REPORT_FILE).read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["durations_from"] == "audio headers" and saved["sets"]["train"]["utterances"] == 3
    assert set(saved["sets"]) == {"train", "heldout", "canary"}
    out = capsys.readouterr().out
    assert "Data report" in out and "warning: 2 of" in out
    section = summary_section(tmp_path / "results")
    assert section.startswith("\n## Data\n") and "unknown tokens in training labels: 2 of" in section
    assert summary_section(tmp_path / "no-report") == ""

    with pytest.raises(ConfigError, match=r"trial.strict_text: 2 of \d+ training label tokens"):
        report_sweep_data(config.replace(strict_text=True), tmp_path / "strict")
    report_sweep_data(config.replace(strict_text=True, text_normalize=True), tmp_path / "normalised")


def test_a_dataset_that_cannot_be_read_stops_the_sweep_with_its_name(tiny_config, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"trial data: {tmp_path}/empty: not a dataset folder"):
        report_sweep_data(tiny_config.replace(train_manifest=str(tmp_path / "empty")).resolved(), tmp_path / "results")


def test_bad_rows_stop_a_local_sweep_listed_by_line_and_are_counted_as_skipped_or_refused(tiny_config, tmp_path):
    rows = make_rows(tmp_path, "train", 4, seed=3)
    rows[2]["audio_filepath"] = "audio/nope.wav"
    rows[0]["text"] = ""
    manifest = write_manifest(tmp_path / "train.jsonl", rows)
    config = tiny_config.replace(train_manifest=str(manifest)).resolved()

    with pytest.raises(ConfigError) as refused:
        report_sweep_data(config, tmp_path / "local")
    message = str(refused.value)
    assert f"{manifest}: 2 bad row(s); fix them or set trial.on_bad_row=skip" in message
    assert message.index(f"{manifest}:1: empty transcript") < message.index(f"{manifest}:3: audio file not found")
    assert (tmp_path / "local" / REPORT_FILE).is_file()  # the report is written before the refusal

    expected = {"empty text": 1, "missing audio": 1}
    skipped = report_sweep_data(config.replace(on_bad_row="skip"), tmp_path / "skip")["sets"]["train"]
    assert skipped["skipped"] == expected and skipped["bad_rows"] == {} and skipped["utterances"] == 2
    # On a cluster the rows are not refused here, but each trial refuses them: never "skipped".
    refused = report_sweep_data(config, tmp_path / "cluster", check_rows_here=False)["sets"]["train"]
    assert refused["bad_rows"] == expected and refused["skipped"] == {} and refused["utterances"] == 2


def test_a_bad_row_that_stops_the_sweep_is_printed_as_refused_never_as_skipped(tiny_config, tmp_path, capsys):
    """A CSV row whose quote is never closed: with on_bad_row=error the report names it a bad
    row the run refuses, and the refusal lists it by file:line; only with skip is it "skipped"."""
    rows = make_rows(tmp_path, "train", 3, seed=5)
    lines = ["audio_filepath,text"] + [f"{row['audio_filepath']},{row['text']}" for row in rows]
    lines[2] = f'{rows[1]["audio_filepath"]},"{rows[1]["text"]}'
    manifest = tmp_path / "train.csv"
    manifest.write_text("\n".join(lines) + "\n")
    config = tiny_config.replace(train_manifest=str(manifest)).resolved()

    with pytest.raises(ConfigError) as refused:
        report_sweep_data(config, tmp_path / "refused")
    printed = capsys.readouterr().out
    assert "  train bad rows: 1 bad quoting (on_bad_row=error refuses them)\n" in printed and "skipped" not in printed
    assert f"{manifest}: 1 bad row(s); fix them or set trial.on_bad_row=skip:\n  {manifest}:3: a quoted field opens" in str(refused.value)

    report_sweep_data(config.replace(on_bad_row="skip"), tmp_path / "skipped")
    printed = capsys.readouterr().out
    assert "  train skipped: 1 bad quoting\n" in printed and "bad rows" not in printed
