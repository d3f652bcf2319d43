"""On-disk cache of baseline hypotheses, shared by every trial that decodes the same thing.

A sweep's trials all start from the same base model and score the same eval sets, so
their baseline decodes are identical: dozens of trials would decode them dozens of times.
The key is everything the hypotheses depend on (weights, tokenizer, feature extractor,
generation config, audio samples, decoding settings, library versions), so a hit can only
return what a fresh decode would. Entries are written atomically and built under a file
lock, so trials that start together decode once and the others wait and read.

``TRAINABLE_DECODE_CACHE`` names the directory (default ``~/.cache/trainable/decodes``);
``off`` turns the cache off.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from trainable.files import atomic_write_json

log = logging.getLogger(__name__)

ENV_VAR = "TRAINABLE_DECODE_CACHE"
# Bump when transcribe() changes what it produces for the same inputs.
DECODER_VERSION = 2


def cache_directory() -> Path | None:
    """The cache folder from the environment; None when the cache is off."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() in {"off", "0", "false", "no"}:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trainable" / "decodes"


def model_fingerprint(model, processor) -> str:
    """Digest of the weights as loaded (so a hub id and a local copy match) plus every
    config that changes what ``generate`` and ``batch_decode`` return."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(_byte_dtype()).numpy())
    digest.update(model.config.to_json_string().encode())
    digest.update(model.generation_config.to_json_string().encode())
    digest.update(processor.feature_extractor.to_json_string().encode())
    digest.update(_tokenizer_text(processor.tokenizer).encode())
    return digest.hexdigest()


def _byte_dtype():
    import torch

    return torch.uint8


def _tokenizer_text(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.to_str()
    return json.dumps(sorted(tokenizer.get_vocab().items())) + json.dumps(tokenizer.all_special_tokens)


def audio_fingerprint(audio) -> str:
    """Exact float32 samples of every utterance, in order (the batches depend on the order)."""
    import numpy as np

    digest = hashlib.sha256()
    for samples in audio:
        array = np.ascontiguousarray(samples, dtype=np.float32)
        digest.update(str(array.shape).encode())
        digest.update(array)
    return digest.hexdigest()


def decode_key(model_digest: str, audio, settings: dict) -> str:
    """One hex key for (model, audio, settings); ``settings`` must be JSON-serialisable."""
    from importlib.metadata import version

    parts = {
        "model": model_digest,
        "audio": audio_fingerprint(audio),
        "settings": settings,
        "decoder_version": DECODER_VERSION,
        "versions": {package: version(package) for package in ("torch", "transformers", "peft", "tokenizers")},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cached_hypotheses(key: str, count: int, decode: Callable[[], list[str]], directory: Path | None = None) -> tuple[list[str], bool]:
    """The hypotheses stored under ``key``, or ``decode()``'s, stored for the next trial.

    Returns (hypotheses, hit). Without a cache directory this is just ``decode()``. A
    stored entry of the wrong length (a truncated or foreign file) is decoded again.
    """
    directory = directory if directory is not None else cache_directory()
    if directory is None:
        return decode(), False
    path = directory / f"{key}.json"
    stored = _read(path, count)
    if stored is not None:
        return stored, True
    with _locked(directory / f"{key}.lock"):
        stored = _read(path, count)  # another trial may have finished it while we waited
        if stored is not None:
            return stored, True
        hypotheses = decode()
        atomic_write_json(path, {"hypotheses": hypotheses})
    return hypotheses, False


def _read(path: Path, count: int) -> list[str] | None:
    try:
        hypotheses = json.loads(path.read_text())["hypotheses"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(hypotheses, list) or len(hypotheses) != count:
        log.warning("%s: cached decode has the wrong shape; decoding again", path)
        return None
    return [str(h) for h in hypotheses]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock: released by the OS if the holder dies, so no stale locks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
