"""Audio that decodes to less than it claims is refused, whatever the container."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile

from trainable.audio import AudioError, load_audio

RATE = 16000


def tone(seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 300 * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def write(path, **format_options):
    soundfile.write(path, tone(), RATE, **format_options)
    return path


def cut(path, share: float):
    data = path.read_bytes()
    cut_path = path.with_name("cut-" + path.name)
    cut_path.write_bytes(data[: int(len(data) * share)])
    return cut_path


@pytest.mark.parametrize("name, options", [
    ("a.wav", {}), ("a.flac", {}), ("a.aiff", {}), ("a.ogg", {"format": "OGG", "subtype": "VORBIS"}),
    ("o.ogg", {"format": "OGG", "subtype": "OPUS"}), ("a.mp3", {"format": "MP3"}),
])
def test_whole_files_decode_to_their_full_length(tmp_path, name, options):
    audio = load_audio(str(write(tmp_path / name, **options)), RATE)
    assert abs(len(audio) - 2 * RATE) < 0.01 * RATE


@pytest.mark.parametrize("name, options, share, says", [
    ("a.wav", {}, 1 / 3, "header gives 'RIFF'"),
    ("a.aiff", {}, 1 / 2, "header gives 'FORM'"),
    ("a.ogg", {"format": "OGG", "subtype": "VORBIS"}, 0.7, "end-of-stream"),
    ("o.ogg", {"format": "OGG", "subtype": "OPUS"}, 0.7, "end-of-stream"),
    ("o.ogg", {"format": "OGG", "subtype": "OPUS"}, 0.999, "end-of-stream"),  # only the last page is cut
    # libsndfile's (LAME's) MP3 starts with a Xing/Info frame that gives the frame count; an
    # MP3 without one announces no length, and only a manifest's duration can catch its truncation.
    ("a.mp3", {"format": "MP3"}, 1 / 3, "decoded .* of the 32000 frames its header announces"),
])
def test_truncated_files_are_refused_as_truncated(tmp_path, name, options, share, says):
    truncated = cut(write(tmp_path / name, **options), share)
    assert len(soundfile.read(truncated)[0]) < 2 * RATE  # libsndfile alone decodes the rest without a word
    with pytest.raises(AudioError, match=says) as error:
        load_audio(str(truncated), RATE)
    assert error.value.reason == "truncated audio" and str(truncated) in str(error.value)


def test_a_flac_whose_decode_stops_early_is_refused(tmp_path):
    truncated = cut(write(tmp_path / "a.flac"), 0.5)
    with pytest.raises(AudioError, match="a.flac"):
        load_audio(str(truncated), RATE)


def test_a_streamed_wav_with_placeholder_lengths_is_accepted(tmp_path):
    """Writers that cannot seek back leave 0xFFFFFFFF as the RIFF and data lengths: not a truncation."""
    path = write(tmp_path / "a.wav", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    assert len(load_audio(str(path), RATE)) == 2 * RATE


def test_missing_and_unreadable_files_have_their_own_reasons(tmp_path):
    with pytest.raises(AudioError) as missing:
        load_audio(str(tmp_path / "nope.wav"), RATE)
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(AudioError) as unreadable:
        load_audio(str(tmp_path / "text.wav"), RATE)
    assert (missing.value.reason, unreadable.value.reason) == ("missing audio", "unreadable audio")


def test_fewer_frames_than_announced_is_a_truncation():
    """The decoder's own count: a decode that stops early without an error."""
    from trainable.audio import truncation

    assert truncation("x.flac", announced=32000, decoded=12000, container="FLAC", log="") == \
        "decoded 12000 of the 32000 frames its header announces"
    assert truncation("x.flac", announced=32000, decoded=32000, container="FLAC", log="") is None
