"""Manifest parsing and every bad-input case: each error must name the file and line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile

from conftest import write_manifest, write_tone
from trainable.data import LeakageError, ModelLimits, check_overlap, prepare_set
from trainable.manifest import ManifestError, read_manifest

LIMITS = ModelLimits(sampling_rate=16000, max_audio_seconds=None, max_label_tokens=None)


@pytest.fixture
def audio_dir(tmp_path):
    for i in range(3):
        write_tone(tmp_path / "audio" / f"a{i}.wav", 0.5 + 0.1 * i, 300 + 50 * i, seed=i)
    return tmp_path


def test_jsonl_field_aliases_and_relative_paths(audio_dir):
    path = write_manifest(audio_dir / "m.jsonl", [
        {"audio_filepath": "audio/a0.wav", "text": "one", "duration": 0.5, "id": "u0", "speaker": "s1"},
        {"audio": {"path": "audio/a1.wav"}, "transcript": "two", "seconds": 0.6},
        {"wav": str(audio_dir / "audio" / "a2.wav"), "transcription": "three"},
    ])
    utterances, problems = read_manifest(path)
    assert not problems
    assert [u.text for u in utterances] == ["one", "two", "three"]
    assert utterances[0].id == "u0" and utterances[0].speaker == "s1"
    assert utterances[1].audio_path == str((audio_dir / "audio" / "a1.wav").resolve())
    assert utterances[1].duration == 0.6 and utterances[2].duration is None
    assert utterances[1].id == "m-2"  # file stem + line when there is no id


def test_json_list_and_tsv(audio_dir):
    json_path = audio_dir / "m.json"
    json_path.write_text(json.dumps([{"path": "audio/a0.wav", "text": "hello"}]))
    tsv_path = audio_dir / "m.tsv"
    tsv_path.write_text("audio/a0.wav\thello there\naudio/a1.wav\tgood bye\n")
    assert [u.text for u in read_manifest(json_path)[0]] == ["hello"]
    tsv = read_manifest(tsv_path)[0]
    assert [u.text for u in tsv] == ["hello there", "good bye"]
    assert tsv[1].source.endswith("m.tsv:2")


def test_a_json_list_names_each_item_by_the_line_it_starts_on(audio_dir):
    path = audio_dir / "list.json"
    path.write_text('[\n  {"path": "audio/a0.wav", "text": "hello"},\n  5,\n  {"path": "audio/a0.wav",\n   "text": ""}, {"path": "audio/a1.wav", "text": "x"}\n]\n')
    utterances, problems = read_manifest(path)
    assert [u.source for u in utterances] == [f"{path}:2", f"{path}:5"]
    assert [str(p) for p in problems] == [f"{path}:3: expected a JSON object, got int", f"{path}:4: empty transcript"]


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"audio_filepath": "audio/a0.wav", "text": "x"', "m.jsonl:2: not valid JSON"),
        ('{"text": "no audio"}', "m.jsonl:2: missing audio field"),
        ('{"audio_filepath": "audio/a0.wav"}', "m.jsonl:2: missing text field"),
        ('{"audio_filepath": "audio/a0.wav", "text": "   "}', "m.jsonl:2: empty transcript"),
        ('{"audio_filepath": "audio/nope.wav", "text": "x"}', "audio file not found"),
    ],
)
def test_bad_rows_are_named_by_file_and_line(audio_dir, line, expected):
    path = audio_dir / "m.jsonl"
    path.write_text('{"audio_filepath": "audio/a1.wav", "text": "fine"}\n' + line + "\n")
    with pytest.raises(ManifestError) as error:
        prepare_set("eval", path, LIMITS)
    assert expected in str(error.value)
    assert "m.jsonl:2" in str(error.value)
    assert "1 bad row" in str(error.value)


def test_corrupt_audio_is_named(audio_dir):
    (audio_dir / "audio" / "bad.wav").write_bytes(b"RIFF\x00\x00not really audio")
    path = write_manifest(audio_dir / "m.jsonl", [{"audio_filepath": "audio/bad.wav", "text": "x"}])
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: unreadable or corrupt audio .*bad\.wav"):
        prepare_set("eval", path, LIMITS)


def test_audio_longer_than_the_model_takes(audio_dir):
    write_tone(audio_dir / "audio" / "long.wav", 2.0, 200, seed=9)
    path = write_manifest(audio_dir / "m.jsonl", [{"audio_filepath": "audio/long.wav", "text": "x"}])
    limits = ModelLimits(16000, max_audio_seconds=1.0, max_label_tokens=None)
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: audio is 2\.0 s; the model takes at most 1 s"):
        prepare_set("eval", path, limits)


def test_all_problems_reported_at_once_and_skip_mode_counts(audio_dir):
    rows = [
        {"audio_filepath": "audio/a0.wav", "text": "good"},
        {"audio_filepath": "audio/missing.wav", "text": "x"},
        {"audio_filepath": "audio/a1.wav", "text": ""},
        {"audio_filepath": "audio/a2.wav", "text": "good too"},
    ]
    path = write_manifest(audio_dir / "m.jsonl", rows)
    with pytest.raises(ManifestError) as error:
        prepare_set("train", path, LIMITS)
    assert "2 bad row(s)" in str(error.value)
    assert "m.jsonl:2" in str(error.value) and "m.jsonl:3" in str(error.value)
    kept = prepare_set("train", path, LIMITS, on_bad_row="skip")
    assert [u.text for u in kept.utterances] == ["good", "good too"]
    assert kept.skipped == {"missing audio": 1, "empty text": 1}


def test_no_usable_rows_is_an_error(audio_dir):
    path = write_manifest(audio_dir / "m.jsonl", [{"audio_filepath": "audio/none.wav", "text": "x"}])
    with pytest.raises(ManifestError, match="no usable utterances"):
        prepare_set("train", path, LIMITS, on_bad_row="skip")
    empty = audio_dir / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ManifestError, match="empty.jsonl: no usable utterances"):
        prepare_set("train", empty, LIMITS)


def test_max_duration_filters_on_the_decoded_length_and_a_wrong_duration_is_a_bad_row(audio_dir):
    rows = [
        {"audio_filepath": "audio/a0.wav", "text": "short", "duration": 0.5},
        {"audio_filepath": "audio/a2.wav", "text": "declared short", "duration": 0.2},  # 0.7 s on disk
        {"audio_filepath": "audio/a1.wav", "text": "decoded long"},  # 0.6 s on disk
    ]
    path = write_manifest(audio_dir / "m.jsonl", rows)
    kept = prepare_set("train", path, LIMITS, max_duration=0.55, on_bad_row="skip")
    assert [u.text for u in kept.utterances] == ["short"]
    assert kept.skipped == {"duration mismatch": 1, "longer than max_duration": 1}


def test_stereo_is_mixed_to_mono_and_resampled(tmp_path):
    write_tone(tmp_path / "st.wav", 1.0, 440, seed=0, rate=8000, channels=2)
    path = write_manifest(tmp_path / "m.jsonl", [{"audio_filepath": "st.wav", "text": "x"}])
    kept = prepare_set("eval", path, LIMITS)
    audio = kept.audio[0]
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert len(audio) == 16000
    # a 440 Hz tone stays a 440 Hz tone after resampling
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440) < 2


def test_leakage_guard_by_path_and_by_content(audio_dir):
    shutil.copy(audio_dir / "audio" / "a1.wav", audio_dir / "audio" / "copy_of_a1.wav")
    data, rate = soundfile.read(audio_dir / "audio" / "a2.wav")
    soundfile.write(audio_dir / "audio" / "a2.flac", data, rate)  # same samples, other container
    train = prepare_set("train", write_manifest(audio_dir / "train.jsonl", [
        {"audio_filepath": f"audio/a{i}.wav", "text": "x", "id": f"t{i}"} for i in range(3)
    ]), LIMITS)
    heldout = prepare_set("heldout", write_manifest(audio_dir / "heldout.jsonl", [
        {"audio_filepath": "audio/a0.wav", "text": "x", "id": "same-path"},
        {"audio_filepath": "audio/copy_of_a1.wav", "text": "x", "id": "same-bytes"},
        {"audio_filepath": "audio/a2.flac", "text": "x", "id": "same-samples"},
    ]), LIMITS)
    clean = prepare_set("clean", write_manifest(audio_dir / "clean.jsonl", [
        {"audio_filepath": str(write_tone(audio_dir / "new.wav", 0.5, 900, seed=42)), "text": "x", "id": "new"},
    ]), LIMITS)
    with pytest.raises(LeakageError, match=r"3 of 3 utterances of eval set 'heldout'.*--allow-overlap"):
        check_overlap(train, [clean, heldout], allow=False)
    overlap = check_overlap(train, [clean, heldout], allow=True)
    assert overlap["heldout"]["count"] == 3
    assert overlap["heldout"]["ids"] == ["same-path", "same-bytes", "same-samples"]
    assert overlap["clean"]["count"] == 0


@pytest.mark.parametrize("text, detail", [
    ('{"audio_filepath": "a.wav", "text": "x\n', "Unterminated string starting at column 37"),
    ('{"audio_filepath" "a.wav"}\n', "Expecting ':' delimiter at column 19"),
])
def test_a_jsonl_error_says_what_and_at_which_column_once(tmp_path, text, detail):
    """json's messages end in "at" or not; the row problem reads as one phrase either way."""
    path = tmp_path / "m.jsonl"
    path.write_text(text)
    _, problems = read_manifest(path)
    assert [str(p) for p in problems] == [f"{path}:1: not valid JSON ({detail})"]
