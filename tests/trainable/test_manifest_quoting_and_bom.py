"""Delimited manifests and dataset metadata as users' tools write them: TSV unquoted (a
transcript may start with a quote), CSV quoted (a transcript may hold a comma), and a UTF-8
byte-order mark at the start of the file (Excel writes one) changing nothing."""

from __future__ import annotations

import json

import pytest

from conftest import write_tone
from trainable.data import ModelLimits, prepare_set
from trainable.manifest import read_manifest
from trainable.sources import read_source

LIMITS = ModelLimits(sampling_rate=16000, max_audio_seconds=None, max_label_tokens=None)
TEXTS = ["one", "two", "three", "four"]


@pytest.fixture
def audio_dir(tmp_path):
    for i in range(4):
        write_tone(tmp_path / "audio" / f"a{i}.wav", 0.5 + 0.1 * i, 300 + 50 * i, seed=i)
    return tmp_path


@pytest.mark.parametrize("quoted", [
    '"quoted" words',           # csv quoting would drop both quotes: "quoted words"
    '"she said, wait',          # an unclosed quote would swallow the lines after it
])
def test_tsv_transcript_starting_with_a_quote_is_kept_verbatim(audio_dir, quoted):
    texts = ["one", quoted, "three", "four"]
    path = audio_dir / "m.tsv"
    path.write_text("".join(f"audio/a{i}.wav\t{text}\n" for i, text in enumerate(texts)))
    utterances, problems = read_manifest(path)
    assert not problems
    assert [u.text for u in utterances] == texts
    assert [u.source for u in utterances] == [f"{path}:{line}" for line in (1, 2, 3, 4)]
    assert [u.audio_path for u in utterances] == [str((audio_dir / "audio" / f"a{i}.wav").resolve()) for i in range(4)]
    assert len(prepare_set("eval", path, LIMITS).utterances) == 4


def test_csv_keeps_quoting_and_names_rows_by_the_physical_line_they_start_on(audio_dir):
    path = audio_dir / "m.csv"
    path.write_text(
        "audio_filepath,text\n"
        'audio/a0.wav,"hello, world"\n'   # line 2: a comma inside a quoted field
        'audio/a1.wav,"two\nlines"\n'     # lines 3-4: one row
        "audio/a2.wav,after\n"            # line 5
        "audio/a3.wav\n"                  # line 6: no text field
    )
    utterances, problems = read_manifest(path)
    assert [u.text for u in utterances] == ["hello, world", "two\nlines", "after"]
    assert [u.source for u in utterances] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert [str(p) for p in problems] == [f"{path}:6: missing text field (one of text, transcript, transcription)"]


def _with_and_without_bom(path, text):
    """What read_manifest gives for ``text`` written plainly, then with a byte-order mark."""
    path.write_text(text, encoding="utf-8")
    plain = read_manifest(path)
    path.write_text(text, encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    return plain, read_manifest(path)


@pytest.mark.parametrize("name, text", [
    ("m.csv", "audio_filepath,text,speaker\n" + "".join(f"audio/a{i}.wav,{t},s{i}\n" for i, t in enumerate(TEXTS))),
    ("m.tsv", "audio\ttranscript\n" + "".join(f"audio/a{i}.wav\t{t}\n" for i, t in enumerate(TEXTS))),
    ("m.tsv", "".join(f"audio/a{i}.wav\t{t}\n" for i, t in enumerate(TEXTS))),  # no header: the first path
    ("m.jsonl", "".join(json.dumps({"audio_filepath": f"audio/a{i}.wav", "text": t}) + "\n" for i, t in enumerate(TEXTS))),
    ("m.json", json.dumps([{"audio_filepath": f"audio/a{i}.wav", "text": t} for i, t in enumerate(TEXTS)])),
])
def test_a_manifest_with_a_byte_order_mark_reads_like_one_without(audio_dir, name, text):
    path = audio_dir / name
    (plain, plain_problems), (bom, bom_problems) = _with_and_without_bom(path, text)
    assert not plain_problems and not bom_problems
    assert [u.text for u in plain] == TEXTS
    assert bom == plain  # ids, resolved audio paths, texts, speakers, sources
    assert len(prepare_set("eval", path, LIMITS).utterances) == 4  # every audio path resolves


def _audiofolder(folder, metadata: str, text: str):
    (folder / "clips").mkdir(parents=True, exist_ok=True)
    for i in range(4):
        write_tone(folder / "clips" / f"c{i}.wav", 0.5 + 0.1 * i, 300 + 50 * i, seed=i)
    (folder / metadata).write_text(text, encoding="utf-8")
    plain = read_source(str(folder))
    (folder / metadata).write_text(text, encoding="utf-8-sig")
    return plain, read_source(str(folder))


@pytest.mark.parametrize("metadata, text", [
    ("metadata.csv", "file_name,transcription,speaker_id\n" + "".join(f"clips/c{i}.wav,{t},s{i}\n" for i, t in enumerate(TEXTS))),
    ("metadata.jsonl", "".join(json.dumps({"file_name": f"clips/c{i}.wav", "transcription": t, "speaker_id": f"s{i}"}) + "\n"
                               for i, t in enumerate(TEXTS))),
])
def test_audiofolder_metadata_with_a_byte_order_mark_reads_like_one_without(tmp_path, metadata, text):
    plain, bom = _audiofolder(tmp_path / "af", metadata, text)
    assert not plain.problems and not bom.problems
    assert [(u.text, u.speaker) for u in plain.utterances] == [(t, f"s{i}") for i, t in enumerate(TEXTS)]
    assert bom.columns == plain.columns
    assert bom.utterances == plain.utterances
    assert bom.sha256 == plain.sha256


def test_common_voice_tsv_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    folder = tmp_path / "cv"
    (folder / "clips").mkdir(parents=True)
    for i in range(4):
        write_tone(folder / "clips" / f"c{i}.wav", 0.5, 300 + 50 * i, seed=i)
    text = "client_id\tpath\tsentence\n" + "".join(f"s{i}\tc{i}.wav\t{t}\n" for i, t in enumerate(TEXTS))
    (folder / "train.tsv").write_text(text, encoding="utf-8")
    plain = read_source(str(folder))
    (folder / "train.tsv").write_text(text, encoding="utf-8-sig")
    bom = read_source(str(folder))
    assert plain.layout == bom.layout == "common_voice"
    assert [(u.text, u.speaker) for u in plain.utterances] == [(t, f"s{i}") for i, t in enumerate(TEXTS)]
    assert bom.utterances == plain.utterances
