"""The data report: what is in each set, shared speakers, and label characters the tokenizer
cannot represent (a warning, an error with strict_text, gone with text_normalize)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from conftest import make_rows, write_manifest
from trainable.data_report import (
    UNKNOWN_TOKEN_WARN_SHARE, TextError, check_labels, format_report, load_tokenizer, report_from_config,
)
from trainable.wer import normalise_casing_and_punctuation

CASED = ["Hello, World!", "Is it blue?", "Red apple.", "Seven, north; river.", "quiet stone", "Stop!"]


@pytest.fixture(scope="module")
def cased(tmp_path_factory) -> dict:
    """A training manifest with capitalised, punctuated transcripts (the demo's character
    tokenizer has no punctuation), and an eval set that shares one of its speakers."""
    root = tmp_path_factory.mktemp("cased")
    rows = make_rows(root, "train", len(CASED), seed=4)
    for row, text in zip(rows, CASED):
        row["text"] = text
    heldout = make_rows(root, "heldout", 3, seed=5, speakers=1)  # speaker spk0, as train's rows 0 and 3
    return {"train": write_manifest(root / "train.jsonl", rows), "heldout": write_manifest(root / "heldout.jsonl", heldout)}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def config_for(tiny_config, cased, **changes):
    return tiny_config.replace(train_manifest=str(cased["train"]), eval_manifests=(("heldout", str(cased["heldout"])),), **changes)


def test_report_counts_sets_speakers_and_unknown_characters(tiny_config, cased, tokenizer):
    report = report_from_config(config_for(tiny_config, cased), tokenizer)
    train = report["sets"]["train"]
    assert train["utterances"] == 6 and train["speakers"] == 3 and train["layout"] == "manifest"
    assert 0.4 <= train["seconds_min"] <= train["seconds_median"] <= train["seconds_max"] <= 1.2
    assert abs(train["hours"] * 3600 - sum(json.loads(line)["duration"] for line in cased["train"].read_text().splitlines())) < 0.01
    assert set("!,.;?H") <= set(train["characters"])
    assert report["shared_speakers"]["heldout"] == {"count": 1, "of": 1, "utterances": 3, "examples": ["spk0"]}
    unknown = report["unknown_tokens"]
    # the demo's tokenizer lower-cases (capitals are fine) and has no , ! ? . ;
    assert unknown["characters"] == "!,.;?"
    assert unknown["count"] == sum(text.count(c) for text in CASED for c in "!,.;?")
    assert unknown["utterances"] == 5 and unknown["examples"][0]["label"] == "Hello, World!"
    assert unknown["share"] > UNKNOWN_TOKEN_WARN_SHARE
    text = format_report(report)
    assert "speakers shared by train and heldout: 1 of 1" in text and "from characters '!,.;?'" in text


def test_unknown_tokens_warn_fail_strict_and_vanish_with_text_normalize(tiny_config, cased, tokenizer):
    warning = check_labels(report_from_config(config_for(tiny_config, cased), tokenizer), strict=False)
    assert warning and "are the tokenizer's unknown token '<unk>'" in warning and "--text-normalize" in warning
    with pytest.raises(TextError, match="from the characters '!,.;\\?'"):
        check_labels(report_from_config(config_for(tiny_config, cased), tokenizer), strict=True)
    normalised = report_from_config(config_for(tiny_config, cased, text_normalize=True), tokenizer)
    assert normalised["unknown_tokens"]["count"] == 0
    assert check_labels(normalised, strict=True) is None


def test_a_few_unknown_tokens_are_reported_but_not_warned(tiny_config, tmp_path, tokenizer):
    rows = make_rows(tmp_path, "train", 2, seed=6)
    rows[0]["text"] = "red " * 600 + "blue!"  # 1 unknown of ~3000 label tokens
    config = tiny_config.replace(train_manifest=str(write_manifest(tmp_path / "train.jsonl", rows)))
    report = report_from_config(config, tokenizer)
    assert report["unknown_tokens"]["count"] == 1 and report["unknown_tokens"]["share"] < UNKNOWN_TOKEN_WARN_SHARE
    assert check_labels(report, strict=False) is None
    with pytest.raises(TextError):
        check_labels(report, strict=True)


def test_run_prints_the_report_and_stores_it(tiny_config, cased, caplog):
    from trainable.pipeline import train_and_evaluate

    with caplog.at_level(logging.INFO, logger="trainable"):
        summary = train_and_evaluate(config_for(tiny_config, cased))
    assert "Data report (durations from decoded audio)" in caplog.text
    assert any(r.levelno == logging.WARNING and "unknown token" in r.getMessage() for r in caplog.records)
    report = summary["data_report"]
    assert report["sets"]["train"]["utterances"] == 6 and report["unknown_tokens"]["characters"] == "!,.;?"
    assert summary["config"]["text_normalize"] is False


def test_driver_report_matches_the_runs(tiny_config, cased, tokenizer, tmp_path):
    """The sweep driver's report (headers, no decoding) says what a run's (decoded) says."""
    from trainable.pipeline import train_and_evaluate

    config = config_for(tiny_config, cased, text_normalize=True, output_dir=str(tmp_path / "run"))
    run = train_and_evaluate(config)["data_report"]
    driver = report_from_config(config, tokenizer)
    for name in ("train", "heldout"):
        for key in ("utterances", "speakers", "characters", "layout"):
            assert driver["sets"][name][key] == run["sets"][name][key]
        assert driver["sets"][name]["hours"] == pytest.approx(run["sets"][name]["hours"], rel=1e-6)
    assert driver["unknown_tokens"] == run["unknown_tokens"] and driver["shared_speakers"] == run["shared_speakers"]


@pytest.mark.slow
def test_cli_strict_text_stops_before_training_and_text_normalize_trains(tiny_model_dir, cased, tmp_path):
    base = [sys.executable, "-m", "trainable.run", "--model", str(tiny_model_dir), "--train-dataset", str(cased["train"]),
            "--eval-dataset", f"heldout={cased['heldout']}", "--device", "cpu", "--max-steps", "1", "--batch-size", "2"]
    strict = subprocess.run(base + ["--strict-text", "--output-dir", str(tmp_path / "s")], capture_output=True, text=True, timeout=300)
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert "error: " in strict.stderr and "from the characters '!,.;?'" in strict.stderr
    assert "Data report" in strict.stderr  # printed before the error
    assert not (tmp_path / "s" / "lora_adapter").exists()
    normalised = subprocess.run(base + ["--strict-text", "--text-normalize", "--output-dir", str(tmp_path / "n")],
                                capture_output=True, text=True, timeout=300)
    assert normalised.returncode == 0, normalised.stderr
    summary = json.loads((tmp_path / "n" / "summary.json").read_text())
    assert summary["config"]["strict_text"] and summary["config"]["text_normalize"]
    assert summary["data_report"]["unknown_tokens"]["count"] == 0


@pytest.mark.parametrize("text, label", [
    ("Hello, World!", "hello world"),
    ("It's 5 o'clock. Don't stop!", "it's 5 o'clock don't stop"),
    ("He paid $20 for 3.5% (laughs) [noise]", "he paid $20 for 3.5%"),
    ("Rock\u2019n\u2019roll \u2014 'quoted'", "rock'n'roll quoted"),
    ("1,000 people...", "1000 people"),
    ("Caf\u00e9", "caf\u00e9"),
])
def test_label_normaliser_keeps_words_as_spoken(text, label):
    assert normalise_casing_and_punctuation(text) == label
