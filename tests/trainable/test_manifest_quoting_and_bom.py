"""Delimited manifests and dataset metadata as users' tools write them: TSV unquoted (a
transcript may start with a quote), CSV quoted within a line (a transcript may hold a comma; a
quote left open is a problem of its line, never a row swallowing the lines after it), and a
UTF-8 byte-order mark at the start of the file (Excel writes one) changing nothing."""

from __future__ import annotations

import json

import pytest

from conftest import write_tone
from trainable.data import ModelLimits, prepare_set
from trainable.manifest import ManifestError, read_manifest
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


def test_csv_keeps_quoting_within_a_line(audio_dir):
    path = audio_dir / "m.csv"
    path.write_text(
        "audio_filepath,text\n"
        'audio/a0.wav,"hello, world"\n'           # a comma inside a quoted field
        'audio/a1.wav,"she said ""wait"""\n'      # quotes inside a quoted field, doubled
        "audio/a2.wav,six\" tall\n"                # a quote inside an unquoted field is text
        "audio/a3.wav\n"                           # line 5: no text field
    )
    utterances, problems = read_manifest(path)
    assert [u.text for u in utterances] == ["hello, world", 'she said "wait"', 'six" tall']
    assert [u.source for u in utterances] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert [str(p) for p in problems] == [f"{path}:5: missing text field (one of text, transcript, transcription)"]


UNCLOSED = "a quoted field opens on this line and is never closed"


def _csv_with(audio_dir, second_row: str, header: bool = True):
    """m.csv: rows one, ``second_row`` for audio a1, three, four (under a header line if ``header``)."""
    path = audio_dir / "m.csv"
    rows = ["audio/a0.wav,one", f"audio/a1.wav,{second_row}", "audio/a2.wav,three", "audio/a3.wav,four"]
    path.write_text(("path,text\n" if header else "") + "".join(row + "\n" for row in rows))
    return path, 1 + header  # the file and the line of the second row


@pytest.mark.parametrize("header", [True, False])
def test_csv_unclosed_quote_is_a_problem_of_its_line_and_the_rows_after_it_are_read(audio_dir, header):
    path, line = _csv_with(audio_dir, '"she said wait', header)
    utterances, problems = read_manifest(path)
    assert [str(p).split(";")[0] for p in problems] == [f"{path}:{line + 1}: {UNCLOSED}"]
    assert [p.reason for p in problems] == ["bad quoting"]
    assert [(u.text, u.source) for u in utterances] == [
        ("one", f"{path}:{line}"), ("three", f"{path}:{line + 2}"), ("four", f"{path}:{line + 3}")]


def test_csv_unclosed_quote_on_the_last_line_is_a_problem(audio_dir):
    path = audio_dir / "m.csv"
    path.write_text('audio/a0.wav,one\naudio/a1.wav,"two')  # no newline at the end either
    utterances, problems = read_manifest(path)
    assert [u.text for u in utterances] == ["one"]
    assert [str(p).split(";")[0] for p in problems] == [f"{path}:2: {UNCLOSED}"]


def test_csv_quoted_field_over_two_lines_is_a_problem_naming_both(audio_dir):
    """Legal CSV, but in ASR data a line break in a transcript is a stray quote joining rows."""
    path = audio_dir / "m.csv"
    path.write_text('audio_filepath,text\naudio/a0.wav,one\naudio/a1.wav,"two\nlines"\naudio/a2.wav,three\n')
    utterances, problems = read_manifest(path)
    assert [(u.text, u.source) for u in utterances] == [("one", f"{path}:2"), ("three", f"{path}:5")]
    assert [str(p).split(";")[0] for p in problems] == [
        f"{path}:3: a quoted field opens on this line and closes on line 4",
        f"{path}:4: missing text field (one of text, transcript, transcription)",  # 'lines"' read as a row of its own
    ]


def test_csv_text_after_a_closing_quote_is_a_problem_not_a_changed_transcript(audio_dir):
    path, line = _csv_with(audio_dir, '"quoted" words')  # csv would read: quoted words
    utterances, problems = read_manifest(path)
    assert [u.text for u in utterances] == ["one", "three", "four"]
    assert [(p.source, p.reason) for p in problems] == [(f"{path}:{line + 1}", "bad quoting")]
    assert "',' expected after '\"'" in str(problems[0])


def test_an_unclosed_quote_stops_the_run_or_is_skipped_with_the_rows_after_it_kept(audio_dir):
    path, line = _csv_with(audio_dir, '"she said wait')
    with pytest.raises(ManifestError) as error:
        prepare_set("train", str(path), LIMITS)
    assert f"{path}: 1 bad row(s)" in str(error.value) and f"{path}:{line + 1}: {UNCLOSED}" in str(error.value)
    kept = prepare_set("train", str(path), LIMITS, on_bad_row="skip")
    assert [u.text for u in kept.utterances] == ["one", "three", "four"]
    assert kept.skipped == {"bad quoting": 1}


def test_jsonl_line_break_inside_a_string_is_a_problem_of_both_halves_and_the_next_row_is_read(audio_dir):
    path = audio_dir / "m.jsonl"
    path.write_text('{"audio": "audio/a0.wav", "text": "two\nlines"}\n{"audio": "audio/a1.wav", "text": "after"}\n')
    utterances, problems = read_manifest(path)
    assert [(u.text, u.source) for u in utterances] == [("after", f"{path}:3")]
    assert [(p.source, p.reason) for p in problems] == [(f"{path}:1", "bad json"), (f"{path}:2", "bad json")]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_jsonl_string_holding_a_unicode_line_separator_is_one_row(audio_dir, separator):
    """json.dumps(..., ensure_ascii=False) writes these unescaped; only \\n ends a JSONL line."""
    path = audio_dir / "m.jsonl"
    rows = [{"audio": "audio/a0.wav", "text": f"one{separator}two"}, {"audio": "audio/a1.wav", "text": "three"}]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    utterances, problems = read_manifest(path)
    assert not problems
    assert [(u.text, u.source) for u in utterances] == [(f"one{separator}two", f"{path}:1"), ("three", f"{path}:2")]


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


def test_audiofolder_metadata_csv_with_an_unclosed_quote_is_refused_naming_its_line(tmp_path):
    folder = tmp_path / "af"
    (folder / "clips").mkdir(parents=True)
    for i in range(3):
        write_tone(folder / "clips" / f"c{i}.wav", 0.5, 300 + 50 * i, seed=i)
    metadata = folder / "metadata.csv"
    metadata.write_text('file_name,transcription\nclips/c0.wav,one\nclips/c1.wav,"two\nclips/c2.wav,three\n')
    with pytest.raises(ManifestError) as error:
        read_source(str(folder))
    assert str(error.value).startswith(f"{metadata}:3: {UNCLOSED}")


def test_trainable_run_exits_2_naming_the_line_of_an_unclosed_quote(tiny_model_dir, tiny_manifests, tmp_path, capsys):
    from trainable.run import main

    folder = tiny_manifests["train"].parent
    rows = [json.loads(line) for line in tiny_manifests["train"].read_text().splitlines()]
    lines = [f'{folder / row["audio_filepath"]},{row["text"]}\n' for row in rows[:4]]
    lines[2] = lines[2].replace(",", ',"', 1)  # line 4 of the file: its transcript's quote is never closed
    train = tmp_path / "train.csv"
    train.write_text("path,text\n" + "".join(lines))
    code = main(["--model", str(tiny_model_dir), "--train-manifest", str(train), "--eval-manifest",
                 f"heldout={tiny_manifests['heldout']}", "--device", "cpu", "--max-steps", "1", "--output-dir", str(tmp_path / "out")])
    printed = capsys.readouterr().err
    assert code == 2, printed
    assert f"{train}: 1 bad row(s)" in printed and f"{train}:4: {UNCLOSED}" in printed
    assert "Traceback" not in printed and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["m.tsv", "m.csv"])
def test_a_line_over_the_csv_field_size_limit_is_a_problem_of_that_line_only(audio_dir, name):
    path = audio_dir / name
    separator = "\t" if name == "m.tsv" else ","
    texts = ["one", "x" * 200_000, "three"]  # csv refuses a field over 131072 characters
    path.write_text("".join(f"audio/a{i}.wav{separator}{text}\n" for i, text in enumerate(texts)))
    utterances, problems = read_manifest(path)
    assert [(u.text, u.source) for u in utterances] == [("one", f"{path}:1"), ("three", f"{path}:3")]
    assert [(p.source, p.reason) for p in problems] == [(f"{path}:2", "bad row")]
    assert "field larger than field limit" in str(problems[0])


def test_a_common_voice_line_csv_cannot_parse_is_named_by_file_and_line(tmp_path):
    """A field over csv's size limit (131,072 characters) is an input error of that line,
    not a csv.Error traceback."""
    folder = tmp_path / "cv"
    (folder / "clips").mkdir(parents=True)
    write_tone(folder / "clips" / "c0.wav", 0.5, 300, seed=0)
    huge = "x" * 140_000
    (folder / "train.tsv").write_text(f"client_id\tpath\tsentence\ns0\tc0.wav\tfine\ns1\tc0.wav\t{huge}\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=rf"{folder / 'train.tsv'}:3: cannot parse \(field larger than field limit"):
        read_source(str(folder))
