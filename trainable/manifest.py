"""Manifests: which audio file says what.

Accepts the formats speech corpora come in (JSONL, a JSON list, TSV/CSV ``path<TAB>text``)
and the field names different toolkits use (NeMo's ``audio_filepath``, HF's ``audio``,
...). Every problem is reported with the file and line, because a user fixing a
manifest of thousands of rows needs to know which one is wrong.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

AUDIO_FIELDS = ("audio_filepath", "audio", "path", "wav")
TEXT_FIELDS = ("text", "transcript", "transcription")
DURATION_FIELDS = ("duration", "seconds")


class ManifestError(ValueError):
    """Bad manifest content or audio; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class Utterance:
    """One row of a manifest or dataset, its audio path already resolved against its folder.

    Audio embedded in a dataset (parquet, save_to_disk, the hub) comes as the audio file's
    bytes; ``audio_path`` then names the row it is in (trainable.sources).
    """

    id: str
    audio_path: str
    text: str
    duration: float | None
    speaker: str
    source: str  # "manifest.jsonl:12" or "/data/ds:train[11]", for error messages and reports
    audio_bytes: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RowProblem:
    """A row that cannot be used, and why (kept so skipped rows can be counted by reason)."""

    source: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


def read_manifest(path: str | Path) -> tuple[list[Utterance], list[RowProblem]]:
    """Parse every row; return the usable utterances and the problems of the others.

    Parsing never stops at the first bad row, so one run reports them all.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    utterances, problems = [], []
    for line, record in _records(path):
        source = f"{path}:{line}"
        if isinstance(record, RowProblem):
            problems.append(record)
            continue
        try:
            utterances.append(_utterance(record, path, source, line))
        except ManifestError as error:
            problems.append(RowProblem(source, error.args[1] if len(error.args) > 1 else "bad row", error.args[0]))
    return utterances, problems


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, dict or RowProblem) for each row, whatever the file format.

    Read as ``utf-8-sig``: a leading byte-order mark (Excel writes one at the start of a CSV)
    is dropped, so it neither hides a header row's first name nor breaks the first JSON line.
    """
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix in {".tsv", ".csv", ".txt"}:
        yield from _delimited_records(path, text, "\t" if suffix != ".csv" else ",")
    elif suffix == ".json" or text.lstrip().startswith("["):
        yield from _json_list_records(path, text)
    else:
        yield from _jsonl_records(path, text)


def _jsonl_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    # Only "\n" ends a line: a JSON string may hold U+2028, U+2029 or U+0085 unescaped
    # (json.dumps(..., ensure_ascii=False) writes them so), which str.splitlines splits at.
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            yield line, RowProblem(f"{path}:{line}", "bad json", f"not valid JSON ({json_error(error)})")
            continue
        if not isinstance(record, dict):
            yield line, RowProblem(f"{path}:{line}", "bad json", f"expected a JSON object, got {type(record).__name__}")
            continue
        yield line, record


def _json_list_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """A JSON list: each item with the line it starts on."""
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path}:{error.lineno}: not valid JSON ({json_error(error)})") from None
    if not isinstance(records, list):
        raise ManifestError(f"{path}: a .json manifest must hold a list of objects")
    for line, record in zip(_item_lines(text), records):
        if not isinstance(record, dict):
            yield line, RowProblem(f"{path}:{line}", "bad json", f"expected a JSON object, got {type(record).__name__}")
            continue
        yield line, record


def _item_lines(text: str) -> Iterator[int]:
    """The line each item of a (valid) top-level JSON list starts on."""
    decoder, position = json.JSONDecoder(), text.index("[") + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return
        yield text.count("\n", 0, position) + 1
        _, position = decoder.raw_decode(text, position)


def json_error(error: json.JSONDecodeError) -> str:
    """What json found wrong and where on the line: its message without the trailing "at"
    some messages end in ("Unterminated string starting at"), then the column."""
    return f"{error.msg.removesuffix(' at')} at column {error.colno}"


def _delimited_records(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, Any]]:
    """``path<TAB>text`` rows; a header row naming known fields is honoured if present."""
    rows = list(delimited_rows(path, text, delimiter))
    first = rows[0][1] if rows and isinstance(rows[0][1], list) else []
    names = [c.strip().lower() for c in first]
    header = names if set(names) & set(AUDIO_FIELDS) and set(names) & set(TEXT_FIELDS) else None
    for index, (line, row) in enumerate(rows):
        if not row or (index == 0 and header):
            continue
        if isinstance(row, RowProblem):
            yield line, row
        elif header:
            yield line, dict(zip(header, row))
        elif len(row) < 2:
            yield line, RowProblem(f"{path}:{line}", "missing field", f"expected 'path{delimiter!r}text', got {len(row)} column(s)")
        else:
            yield line, {"audio_filepath": row[0], "text": delimiter.join(row[1:])}


def delimited_rows(path: Path, text: str, delimiter: str) -> Iterator[tuple[int, list[str] | RowProblem]]:
    """(line number, fields or RowProblem) for each physical line of a TSV or CSV file.

    A row is one line, in both. TSV (and .txt) is read unquoted, as speech corpora write it
    (Common Voice too, see trainable.layouts): a ``"`` is just text, so a transcript that
    starts with a quote neither loses it nor swallows the lines after it. CSV keeps csv
    quoting within a line, since a transcript holding a comma must be quoted there; a quote
    left open at the end of its line is a problem of that line, and the next line is read as
    the next row. CSV would let the field run on to the next quote in the file, joining the
    rows between into one transcript: in ASR data that is a stray quote far more often than a
    transcript with a line break, and no line break is spoken.
    """
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    lines = io.StringIO(text).readlines()  # split at "\n" only: read_text turned "\r\n" and "\r" into it
    for line, raw in enumerate(lines, start=1):
        try:
            yield line, next(csv.reader([raw], delimiter=delimiter, quoting=quoting, strict=True), [])
        except csv.Error as error:
            yield line, _line_problem(f"{path}:{line}", error, line, lines)


def _line_problem(source: str, error: csv.Error, line: int, lines: list[str]) -> RowProblem:
    """Why the csv module refused line ``line`` (1-based) of ``lines``."""
    if "end of data" in str(error):  # the line ends inside a quoted field
        return RowProblem(source, "bad quoting", _unclosed_quote(line, lines))
    if "expected after" in str(error):  # text after a closing quote: csv would drop both quotes
        return RowProblem(source, "bad quoting", f'cannot parse ({error}); quote a field holding a quote whole, writing each " in it as ""')
    return RowProblem(source, "bad row", f"cannot parse ({error})")  # e.g. a field over csv's size limit


def _unclosed_quote(line: int, lines: list[str]) -> str:
    """A quote left open on line ``line``, and the line where plain CSV would close it, if any."""
    # Inside a quoted field "" is a quote of the text; a lone " ends the field.
    closing = next((number for number in range(line + 1, len(lines) + 1) if '"' in lines[number - 1].replace('""', "")), None)
    if closing is None:
        return 'a quoted field opens on this line and is never closed; write a " inside a quoted field as ""'
    return (f"a quoted field opens on this line and closes on line {closing}; a row is one line, so a "
            'transcript holds no line break: close the quote on this line, or write a " inside a quoted field as ""')


def _field(record: dict, names: tuple[str, ...]) -> Any:
    for name in names:
        if name in record and record[name] is not None:
            value = record[name]
            # HF datasets style: {"audio": {"path": ...}}
            if isinstance(value, dict) and "path" in value:
                value = value["path"]
            return value
    return None


def transcript_and_duration(text: Any, duration: Any) -> tuple[str, float | None]:
    """A row's stripped transcript (present: the caller checks that) and its duration field
    as seconds, or ManifestError(message, reason) for an empty transcript or a non-number."""
    if not str(text).strip():
        raise ManifestError("empty transcript", "empty text")
    try:
        return str(text).strip(), (float(duration) if duration is not None else None)
    except (TypeError, ValueError):
        raise ManifestError(f"duration {duration!r} is not a number", "bad duration") from None


def _utterance(record: dict, manifest: Path, source: str, line: int) -> Utterance:
    """One row as an Utterance; a bad row raises ManifestError(message, reason), whose
    message ``read_manifest`` prefixes with the row's ``file:line`` (as a RowProblem)."""
    audio = _field(record, AUDIO_FIELDS)
    if audio is None or not str(audio).strip():
        raise ManifestError(f"missing audio field (one of {', '.join(AUDIO_FIELDS)})", "missing field")
    text = _field(record, TEXT_FIELDS)
    if text is None:
        raise ManifestError(f"missing text field (one of {', '.join(TEXT_FIELDS)})", "missing field")
    text, duration = transcript_and_duration(text, _field(record, DURATION_FIELDS))
    audio_path = Path(str(audio)).expanduser()
    if not audio_path.is_absolute():
        audio_path = manifest.parent / audio_path
    return Utterance(
        id=str(record.get("id") or record.get("utterance_id") or f"{manifest.stem}-{line}"),
        audio_path=str(audio_path.resolve()),
        text=text,
        duration=duration,
        speaker=str(record.get("speaker") or record.get("speaker_id") or ""),
        source=source,
    )
