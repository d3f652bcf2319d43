"""Each faster path gives what the slow one gives: the same hypotheses, losses and reports."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from trainable.decode_cache import ENV_VAR, cached_hypotheses
from trainable.pipeline import train_and_evaluate


def baseline_report(output_dir, name="heldout") -> dict:
    return json.loads((Path(output_dir) / f"{name}_baseline.json").read_text())


def test_cached_baseline_equals_a_fresh_decode(tiny_config, tmp_path, monkeypatch):
    import trainable.pipeline as pipeline

    monkeypatch.setenv(ENV_VAR, "off")
    train_and_evaluate(tiny_config.replace(output_dir=str(tmp_path / "fresh")))

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    train_and_evaluate(tiny_config.replace(output_dir=str(tmp_path / "first")))
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2  # heldout and canary

    decoded = []
    real = pipeline.transcribe
    monkeypatch.setattr(pipeline, "transcribe", lambda model, processor, s, *a, **k: decoded.append(s.name) or real(model, processor, s, *a, **k))
    train_and_evaluate(tiny_config.replace(output_dir=str(tmp_path / "second"), seed=7))
    assert decoded == ["heldout", "canary"], "the second trial decoded its baseline again"  # tuned only
    for name in ("heldout", "canary"):
        assert baseline_report(tmp_path / "second", name) == baseline_report(tmp_path / "fresh", name)


def test_baseline_cache_key_follows_decode_settings(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    train_and_evaluate(tiny_config.replace(output_dir=str(tmp_path / "a")))
    train_and_evaluate(tiny_config.replace(output_dir=str(tmp_path / "b"), eval_batch_size=2))
    assert len(list((tmp_path / "cache").glob("*.json"))) == 4


def test_concurrent_trials_decode_a_baseline_once(tmp_path):
    calls = []

    def slow_decode():
        calls.append(1)
        time.sleep(0.3)
        return ["a b", "c"]

    results = []
    threads = [threading.Thread(target=lambda: results.append(cached_hypotheses("k", 2, slow_decode, tmp_path))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True, True]
    assert all(hypotheses == ["a b", "c"] for hypotheses, _ in results)


def test_a_damaged_cache_entry_is_decoded_again(tmp_path):
    (tmp_path / "k.json").write_text('{"hypotheses": ["only one"]}')
    hypotheses, hit = cached_hypotheses("k", 2, lambda: ["x", "y"], tmp_path)
    assert (hypotheses, hit) == (["x", "y"], False)
    assert cached_hypotheses("k", 2, lambda: pytest.fail("decoded again"), tmp_path) == (["x", "y"], True)
