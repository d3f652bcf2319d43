"""Decode audio once, in the model's sampling rate, mono, float32."""

from __future__ import annotations

import hashlib
from math import gcd

import numpy as np


class AudioError(ValueError):
    """The file cannot be read as audio; the message says which file and why."""


def load_audio(path: str, sampling_rate: int, data: bytes | None = None) -> np.ndarray:
    """soundfile decode, stereo averaged to mono, polyphase resampling to ``sampling_rate``.

    ``data``: the bytes of an audio file embedded in a dataset; ``path`` then only names
    where they came from, for messages.
    """
    import io
    import os

    import soundfile

    if data is None and not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        samples, rate = soundfile.read(io.BytesIO(data) if data is not None else path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        reason = getattr(error, "error_string", None) or error  # without soundfile's "Error opening <BytesIO ...>"
        raise AudioError(f"unreadable or corrupt audio {path}: {reason}") from None
    if samples.shape[0] == 0:
        raise AudioError(f"audio file has no samples: {path}")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"audio has NaN or infinite samples: {path}")
    return resample(mono, rate, sampling_rate)


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    if rate == target_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    divisor = gcd(int(rate), int(target_rate))
    out = resample_poly(samples, target_rate // divisor, rate // divisor)
    return out.astype(np.float32)


def content_hash(samples: np.ndarray) -> str:
    """Hash of the decoded samples: the same recording in another file or container matches."""
    quantised = np.round(np.asarray(samples, dtype=np.float32) * 32767).astype(np.int16)
    return hashlib.sha1(quantised.tobytes()).hexdigest()
