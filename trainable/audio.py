"""Decode audio once, in the model's sampling rate, mono, float32, and refuse files that
decode to less than they should: a truncated file decodes without an error, to a part of
its audio, and would be trained on as if its transcript described that part."""

from __future__ import annotations

import hashlib
import os
import re
from math import gcd

import numpy as np

# Length fields of a header that are placeholders, not lengths: streamed WAVs say 0xFFFFFFFF
# (or 0x7FFFFFFF) because the writer could not seek back to fill them in.
_STREAMING_LENGTH = 0x7FFFFFFF
# libsndfile's log line for a header length that disagrees with the file: "data : 96000 (should be 31970)".
_LENGTH_MISMATCH = re.compile(r"^\s*(\S+)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# The largest Ogg page: 27-byte header, 255 lacing values, 255 segments of 255 bytes.
_MAX_OGG_PAGE = 27 + 255 + 255 * 255
_OGG_END_OF_STREAM = 0x04


class AudioError(ValueError):
    """The file cannot be used as audio; the message says which file and why, ``reason``
    names the kind of problem (the count key when bad rows are skipped)."""

    def __init__(self, message: str, reason: str = "unreadable audio"):
        super().__init__(message)
        self.reason = reason


def load_audio(path: str, sampling_rate: int, data: bytes | None = None) -> np.ndarray:
    """soundfile decode, checked for truncation, stereo averaged to mono, polyphase
    resampling to ``sampling_rate``.

    ``data``: the bytes of an audio file embedded in a dataset; ``path`` then only names
    where they came from, for messages.
    """
    import soundfile

    source = _opened(path, data)
    try:
        with soundfile.SoundFile(source) as audio:
            announced, rate, container, log = audio.frames, audio.samplerate, audio.format, audio.extra_info
            samples = audio.read(dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise _unreadable(path, error) from None
    truncated = truncation(data if data is not None else path, announced, samples.shape[0], container, log)
    if truncated:
        raise AudioError(f"truncated or corrupt audio {path}: {truncated}", "truncated audio")
    if samples.shape[0] == 0:
        raise AudioError(f"audio file has no samples: {path}")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"audio has NaN or infinite samples: {path}")
    return resample(mono, rate, sampling_rate)


def header_seconds(path: str, data: bytes | None = None) -> float:
    """The length the file's header announces, without decoding (soundfile.info); the same
    AudioError as ``load_audio`` for a missing or unreadable file. Truncation shows only
    in a decode."""
    import soundfile

    source = _opened(path, data)
    try:
        return float(soundfile.info(source).duration)
    except Exception as error:
        raise _unreadable(path, error) from None


def _opened(path: str, data: bytes | None):
    """What soundfile reads: the embedded bytes, else the file, which must exist."""
    import io

    if data is not None:
        return io.BytesIO(data)
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}", "missing audio")
    return path


def _unreadable(path: str, error: Exception) -> AudioError:
    reason = getattr(error, "error_string", None) or error  # without soundfile's "Error opening <BytesIO ...>"
    return AudioError(f"unreadable or corrupt audio {path}: {reason}")


def truncation(source: str | bytes, announced: int, decoded: int, container: str, log: str) -> str | None:
    """Why the file holds less audio than it claims, or None. Three signs: fewer frames
    decoded than the header announces (FLAC, a decode that stops early); a header length
    larger than the file (libsndfile logs "should be"; WAV, AIFF, W64 are then read only
    as far as the file goes); an Ogg stream whose last page is cut or lacks the
    end-of-stream flag (Ogg counts its frames from the last page it finds)."""
    if decoded < announced:
        return f"decoded {decoded} of the {announced} frames its header announces"
    for name, claimed, actual in _LENGTH_MISMATCH.findall(log):
        if int(actual) < int(claimed) < _STREAMING_LENGTH:
            return f"its header gives '{name}' {claimed} bytes but the file holds {actual}"
    if container == "OGG" and not _ogg_ends_cleanly(_tail(source, _MAX_OGG_PAGE)):
        return "the Ogg stream stops before its final (end-of-stream) page"
    return None


def _tail(source: str | bytes, size: int) -> bytes:
    """The last ``size`` bytes of a file (a path) or of embedded bytes."""
    if isinstance(source, bytes):
        return source[-size:]
    with open(source, "rb") as file:
        file.seek(max(0, os.path.getsize(source) - size))
        return file.read()


def _ogg_ends_cleanly(tail: bytes) -> bool:
    """The stream's last Ogg page (in ``tail``, the end of the file) is whole and carries
    the end-of-stream flag."""
    start = tail.rfind(b"OggS\x00")  # capture pattern + stream structure version 0
    if start < 0 or len(tail) - start < 27:
        return False
    segments = tail[start + 26]
    lacing = tail[start + 27 : start + 27 + segments]
    end = start + 27 + segments + sum(lacing)
    return len(lacing) == segments and end <= len(tail) and bool(tail[start + 5] & _OGG_END_OF_STREAM)


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
