"""Shared fixtures: a tiny random Moonshine and a few real audio files, built in seconds.

No download anywhere: the model is built from a small MoonshineConfig, the audio is
synthesised tones and noise written with soundfile.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

SAMPLING_RATE = 16000
# Set for a pytest process of its own whose cases drive Ray (tests/cluster/test_two_node_cluster.py).
RAY_DRIVER_ALLOWED = "SWEEPS_TESTS_RAY_DRIVER_ALLOWED"
WORDS = ["red", "blue", "green", "seven", "lamp", "river", "stone", "quiet", "north", "apple"]


def write_tone(path: Path, seconds: float, frequency: float, seed: int, rate: int = SAMPLING_RATE, channels: int = 1) -> Path:
    """A tone plus a little noise: real audio bytes that differ per utterance."""
    import soundfile

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * frequency * t) + 0.02 * rng.standard_normal(len(t))
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, data.astype(np.float32), rate)
    return path


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def make_rows(directory: Path, prefix: str, count: int, seed: int, speakers: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        seconds = float(rng.uniform(0.4, 1.2))
        audio = write_tone(directory / "audio" / f"{prefix}{i}.wav", seconds, 200 + 40 * i + 300 * seed, seed * 1000 + i)
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        rows.append({"id": f"{prefix}{i}", "audio_filepath": f"audio/{audio.name}", "text": text,
                     "duration": round(seconds, 3), "speaker": f"spk{i % speakers}"})
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised Moonshine (hidden 32, 1+1 layers) with the demo's character processor."""
    from demo.model import save_tiny_moonshine

    return save_tiny_moonshine(
        tmp_path_factory.mktemp("tiny-moonshine"), hidden_size=32, encoder_layers=1, decoder_layers=1, attention_heads=2
    )


@pytest.fixture(scope="session")
def tiny_manifests(tmp_path_factory) -> dict[str, Path]:
    """train (8 utterances), heldout (4) and canary (3) manifests over distinct audio files."""
    directory = tmp_path_factory.mktemp("tiny-data")
    return {
        "train": write_manifest(directory / "train.jsonl", make_rows(directory, "train", 8, seed=1)),
        "heldout": write_manifest(directory / "heldout.jsonl", make_rows(directory, "heldout", 4, seed=2)),
        "canary": write_manifest(directory / "canary.jsonl", make_rows(directory, "canary", 3, seed=3)),
    }


@pytest.fixture
def tiny_config(tiny_model_dir, tiny_manifests, tmp_path):
    """A 2-step recipe on the tiny model: everything a real run does, in seconds."""
    from trainable.config import TrialConfig

    return TrialConfig(
        model=str(tiny_model_dir),
        train_manifest=str(tiny_manifests["train"]),
        eval_manifests=(("heldout", str(tiny_manifests["heldout"])), ("canary", str(tiny_manifests["canary"]))),
        max_steps=2,
        batch_size=4,
        warmup_steps=0,
        learning_rate=1e-3,
        lora_dropout=0.1,
        target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),  # not the demo-tuned default: tests are calibrated on attention adapters
        eval_batch_size=4,
        device="cpu",
        num_threads=1,
        output_dir=str(tmp_path / "run"),
    )


def _sclite_command() -> list[str] | None:
    """sclite from NIST SCTK: on PATH, or through Debian's ``sctk`` dispatcher."""
    import shutil

    if shutil.which("sclite"):
        return ["sclite"]
    if shutil.which("sctk"):
        return ["sctk", "sclite"]
    return None


@pytest.fixture(scope="session")
def sclite_totals():
    """A function (reference trn, hypothesis trn) -> sclite's corpus totals {sentences, words,
    substitutions, deletions, insertions, errors}; skips where SCTK is not installed."""
    import re
    import subprocess

    command = _sclite_command()
    if command is None:
        pytest.skip("NIST SCTK (sclite) is not installed: apt-get install sctk")

    def totals(reference: Path, hypothesis: Path) -> dict[str, int]:
        out = subprocess.run(command + ["-e", "utf-8", "-i", "rm", "-r", str(reference), "trn", "-h", str(hypothesis), "trn",
                                        "-o", "rsum", "stdout"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        row = next(line for line in out.stdout.splitlines() if re.match(r"\s*\|\s*Sum\s*\|", line))
        numbers = [int(n) for n in re.findall(r"\d+", row)]
        keys = ("sentences", "words", "correct", "substitutions", "deletions", "insertions", "errors", "sentence_errors")
        return dict(zip(keys, numbers))

    return totals


@pytest.fixture(autouse=True, scope="session")
def no_ray_driver_in_the_test_process():
    """``ray.init`` in the test process raises: a test runs its Ray driver in a child process
    (``python -m sweeps.run``, ``python -m sweeps.repro``, a short script), as a user does.
    Ray is not safe to start again in a process where it has been shut down: its threads keep
    references to the old core worker (ray-project/ray#31145). A test process that started
    and stopped four Ray drivers crashed with SIGSEGV at exit, after every test had passed."""
    try:
        import ray
    except ImportError:
        ray = None
    if ray is None or os.environ.get(RAY_DRIVER_ALLOWED):
        yield
        return

    def refuse(*args, **kwargs):
        raise RuntimeError("ray.init in the pytest process: start Ray in a child process "
                           "(python -m sweeps.run / sweeps.repro, or a script); see tests/conftest.py")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ray, "init", refuse)
        yield


@pytest.fixture(autouse=True, scope="session")
def decode_cache_of_this_test_run(tmp_path_factory):
    """Baseline decodes go to a cache folder of this test run, not the user's
    ~/.cache/trainable/decodes: a test never reads a decode an earlier run or the user made,
    and leaves nothing behind. Child processes (sweeps, repro, Ray workers) inherit it."""
    from trainable.decode_cache import ENV_VAR

    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get(ENV_VAR):
            patch.setenv(ENV_VAR, str(tmp_path_factory.mktemp("decodes")))
        yield
