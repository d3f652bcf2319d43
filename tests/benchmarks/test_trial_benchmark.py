"""The benchmark's pieces on the tiny model: they run, and their ratios mean what the table says."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks import measure
from benchmarks.trial import OLD_EVAL_UTTERANCES, OLD_TRAIN_UTTERANCES, extrapolate, rows


@pytest.fixture(scope="module")
def bench(tiny_model_dir, tiny_manifests):
    return measure.load_bench(str(tiny_model_dir), str(tiny_manifests["train"]), str(tiny_manifests["heldout"]))


def test_help_does_not_import_torch():
    code = "import sys, benchmarks.trial as t\ntry:\n    t.main(['--help'])\nexcept SystemExit:\n    pass\nassert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.slow
def test_floor_and_batching_measure_the_same_utterances(bench):
    indices = list(range(len(bench.train_set)))
    assert measure.floor_seconds(bench, indices, 4) > 0
    result = measure.batching_seconds(bench, indices, 4)
    assert result["count"] == len(indices) and all(s > 0 for s in result["seconds"].values())
    assert 0 <= result["padded"]["bucketed"] <= result["padded"]["random"] < 1


def test_decoding_rows_compare_identical_work(bench):
    result = measure.decoding_seconds(bench, batch_size=4, tokens_per_second=10.0)
    assert result["count"] == len(bench.eval_set)
    assert result["agree"] == result["count"]  # batched decoding gives what one at a time gives


def test_encoder_cache_row_needs_decoder_only_adapters(tiny_model_dir, tiny_manifests, bench):
    with pytest.raises(AssertionError, match="frozen"):
        measure.encoder_cache_seconds(bench, [0, 1])
    decoder_only = measure.load_bench(str(tiny_model_dir), str(tiny_manifests["train"]), str(tiny_manifests["heldout"]), decoder_only=True)
    result = measure.encoder_cache_seconds(decoder_only, [0, 1, 2])
    assert result["count"] == 3 and result["first_epoch"] > 0


def test_extrapolation_scales_training_and_eval_separately():
    result = {
        "n_train": 40, "best_batch": 2, "floor": {"best": 8.0, "batch1": 10.0},
        "trial": {"train_utterances": 40, "train_seconds": 10.0, "decode_seconds": 4.0, "decoded": 20,
                  "elapsed_seconds": 20.0, "baseline_seconds": 2.0, "rss_peak": 2e9, "rss_loaded": 1e9, "wall": {"elapsed": 25.0}},
    }
    old = extrapolate(result)
    assert old["fixed"] == pytest.approx(6.0)
    assert old["cold"] == pytest.approx(6.0 + OLD_TRAIN_UTTERANCES * 0.25 + 2 * OLD_EVAL_UTTERANCES * 0.2)
    assert old["cold"] - old["warm"] == pytest.approx(OLD_EVAL_UTTERANCES * 0.2)
    assert old["floor"] == pytest.approx(OLD_TRAIN_UTTERANCES * 0.2)
    result |= {"decoding": {"seconds": {"batched": 1.0, "single": 4.0}, "agree": 20, "count": 20},
               "batching": {"seconds": {"bucketed": 1.0, "random": 1.5}, "count": 8, "padded": {"bucketed": 0.1, "random": 0.4}},
               "encoder": {"seconds": {"recomputed": 2.0, "cached": 1.0}, "first_epoch": 2.0, "count": 4}, "baseline_hit": 0.1}
    table = {row + what: ratio for row, what, ratio, _ in rows(result)}
    assert table["P2eval utt/s: batched (16, length-sorted) / one at a time"] == "4.0x"
    assert table["P4peak RSS of the trial / RSS with the model loaded"] == "2.00"


def test_the_bootstrap_benchmark_answers_help_without_running(capsys):
    from benchmarks.bootstrap import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m benchmarks.bootstrap") and "speed-up" not in out
