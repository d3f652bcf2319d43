"""Where a set of utterances comes from: a manifest file, or a dataset as users hold it.

A *data spec* is one string, so a recipe, a sweep YAML and best.json carry a dataset exactly
as they carry a manifest path (the recipe fields ``train_manifest`` / ``eval_manifests``
hold either)::

    LOCATION[:SPLIT][?ROLE=COLUMN&...]

    data/train.jsonl                      a manifest (JSONL, JSON list, TSV/CSV; trainable.manifest)
    data/my_ds:train                      a datasets.save_to_disk folder (the split of a DatasetDict)
    data/parquet:test  data/*.parquet     parquet files: a folder (split from file or folder names) or a glob
    data/clips:train                      an audiofolder: audio files plus metadata.csv/.jsonl/.parquet
    data/cv-corpus/en:dev                 a Common Voice release folder: <split>.tsv plus clips/
    openslr/librispeech_asr:test.clean    a Hugging Face hub id (needs the ``datasets`` package)

Column names are guessed from the conventions (``COLUMN_GUESSES``); ``?text=normalized_text``
(roles: audio, text, speaker, id, duration) names one explicitly. A hub id also takes
``config``, ``revision`` and ``streaming``.

Every layout becomes the same ``Utterance`` rows the manifest reader gives, with ``source``
naming the dataset and row (``/data/my_ds:train[17]``), so bad rows, ``--on-bad-row``, the
leakage guard, resampling and ``max_duration`` work alike for all of them. Audio embedded in
a dataset stays in memory as the file's bytes until soundfile decodes it.

Standard library only at import time: the spec is parsed by the recipe object, which
``--help`` loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from trainable.layouts import GLOB_CHARS, METADATA_FILES, read_table, tsv_header
from trainable.manifest import ManifestError, RowProblem, Utterance, read_manifest, transcript_and_duration

MANIFEST_SUFFIXES = (".jsonl", ".json", ".tsv", ".csv", ".txt")
COLUMN_ROLES = ("audio", "text", "speaker", "id", "duration")
HUB_OPTIONS = ("config", "revision", "streaming")
# Column names each role goes by, in the order they are tried: Hugging Face / Common Voice
# (audio, sentence, client_id), audiofolder (file_name), NeMo and others.
COLUMN_GUESSES = {
    "audio": ("audio", "audio_filepath", "file_name", "path", "file", "wav"),
    "text": ("sentence", "text", "transcription", "transcript"),
    "speaker": ("client_id", "speaker_id", "speaker"),
    "id": ("id", "utterance_id", "segment_id"),
    "duration": ("duration", "seconds"),
}
# "owner/name" as the hub spells dataset ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_QUERY = re.compile(r"\?(?=[a-z_]+=)")


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: where, which split, and the options after ``?``."""

    location: str
    split: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "DataSpec":
        """Split ``LOCATION[:SPLIT][?k=v&...]``; a string that is an existing path as a whole
        (a file name with ':' in it) is only a location."""
        text = str(text).strip()
        if not text:
            raise ManifestError("empty data spec: expected a manifest file, a dataset folder or a hub id")
        if os.path.exists(text):
            return cls(text)
        query = _QUERY.search(text)
        base, options = (text[: query.start()], _parse_options(text, text[query.end():])) if query else (text, ())
        location, split = _split_off(base)
        return cls(location, split, options)

    def __str__(self) -> str:
        text = self.location + (f":{self.split}" if self.split else "")
        return text + ("?" + "&".join(f"{k}={v}" for k, v in self.options) if self.options else "")

    def option(self, key: str) -> str | None:
        return dict(self.options).get(key)

    @property
    def columns(self) -> dict[str, str]:
        """Roles whose column is named explicitly."""
        return {k: v for k, v in self.options if k in COLUMN_ROLES}

    def with_location(self, location: str) -> "DataSpec":
        return DataSpec(location, self.split, self.options)

    @property
    def display(self) -> str:
        """How rows of this source are named in messages: ``/data/ds:train`` then ``[17]``."""
        return self.location + (f":{self.split}" if self.split else "")


def _parse_options(text: str, query: str) -> tuple[tuple[str, str], ...]:
    options = []
    for part in query.split("&"):
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise ManifestError(f"{text}: option {part!r} is not KEY=VALUE")
        if key not in COLUMN_ROLES + HUB_OPTIONS:
            raise ManifestError(f"{text}: unknown option {key!r}; known: {', '.join(COLUMN_ROLES + HUB_OPTIONS)}")
        options.append((key, value))
    return tuple(sorted(options))


def _split_off(base: str) -> tuple[str, str | None]:
    """``path:split`` -> (path, split). A colon inside a path (``C:\\``, ``s3://``) is no split."""
    location, sep, split = base.rpartition(":")
    if not sep or not location or "/" in split or "\\" in split or len(location) == 1 or split.startswith("//"):
        return base, None
    if not split:
        raise ManifestError(f"{base}: empty split after ':'")
    return location, split


def looks_like_hub_id(location: str) -> bool:
    """``owner/name``, not a path this machine has, and no file name or glob."""
    return (
        bool(_HUB_ID.match(location))
        and not os.path.exists(location)
        and Path(location).suffix.lower() not in MANIFEST_SUFFIXES + (".parquet", ".arrow")
    )


def layout_of(spec: DataSpec) -> str:
    """Which reader a spec needs: manifest, save_to_disk, parquet, audiofolder, common_voice or hub."""
    path = Path(spec.location).expanduser()
    if any(char in spec.location for char in GLOB_CHARS):
        return "parquet"
    if path.is_file():
        return _file_layout(path)
    if path.is_dir():
        return _folder_layout(path)
    if looks_like_hub_id(spec.location):
        return "hub"
    raise ManifestError(f"{spec.location}: no such file or folder (and not a Hugging Face hub id: owner/name)")


def _file_layout(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".tsv" and (path.parent / "clips").is_dir() and set(tsv_header(path)) >= {"path", "sentence"}:
        return "common_voice"
    if suffix in MANIFEST_SUFFIXES:
        return "manifest"
    raise ManifestError(f"{path}: not a manifest ({', '.join(MANIFEST_SUFFIXES)}) nor a parquet file")


def _folder_layout(path: Path) -> str:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "save_to_disk"
    if (path / "clips").is_dir() and any(path.glob("*.tsv")):
        return "common_voice"
    if any(next(path.rglob(name), None) for name in METADATA_FILES):
        return "audiofolder"
    if next(path.rglob("*.parquet"), None):
        return "parquet"
    raise ManifestError(
        f"{path}: not a dataset folder this tool reads: expected a datasets.save_to_disk folder "
        "(state.json or dataset_dict.json), parquet files, an audiofolder (metadata.csv/.jsonl/.parquet) "
        "or a Common Voice release (*.tsv and clips/)"
    )


# --------------------------------------------------------------------------- reading


@dataclass
class SourceRows:
    """One data source read: its utterances, its bad rows, and what it was read as."""

    spec: str
    layout: str
    columns: dict[str, str | None]  # role -> column used (empty for a manifest)
    utterances: list[Utterance]
    problems: list[RowProblem]
    sha256: str  # of the manifest file, or of a dataset's rows as read


def read_source(text: str) -> SourceRows:
    """Read every row of a manifest or dataset; bad rows are collected, not raised."""
    spec = DataSpec.parse(text)
    layout = layout_of(spec)
    if layout == "manifest":
        if spec.split or spec.options:
            raise ManifestError(f"{text}: a manifest file takes no :split or ?options (those are for datasets)")
        utterances, problems = read_manifest(spec.location)
        return SourceRows(text, layout, {}, utterances, problems, _file_sha256(spec.location))
    table = read_table(layout, spec)
    columns = choose_columns(table.columns, spec, layout)
    utterances, problems, digest = _rows_to_utterances(table, columns, spec)
    return SourceRows(text, layout, columns, utterances, problems, digest)


def manifest_sha256(text: str) -> str | None:
    """The SHA-256 ``read_source`` records for a manifest file that is readable here; None for a
    dataset (its digest needs every row read) or a file this machine cannot read."""
    try:
        spec = DataSpec.parse(text)
        return _file_sha256(spec.location) if layout_of(spec) == "manifest" else None
    except (ManifestError, OSError):
        return None


def is_hub_spec(text: str) -> bool:
    return looks_like_hub_id(DataSpec.parse(text).location)


def source_exists(text: str) -> bool:
    """Whether this machine can read the source's location (not yet its rows or audio)."""
    location = os.path.expanduser(DataSpec.parse(text).location)
    if any(char in location for char in GLOB_CHARS):
        import glob

        return bool(glob.glob(location, recursive=True))
    return os.path.exists(location) and os.access(location, os.R_OK)


def choose_columns(available: Iterable[str], spec: DataSpec, layout: str) -> dict[str, str | None]:
    """The column for each role: the one the spec names, else the first conventional name present.
    Audio and text are required; the others may be absent."""
    available = list(available)
    chosen: dict[str, str | None] = {}
    for role in COLUMN_ROLES:
        named = spec.columns.get(role)
        if named is not None and named not in available:
            raise ManifestError(f"{spec.display}: no column {named!r} (given as ?{role}=); columns: {', '.join(available)}")
        chosen[role] = named or next((c for c in COLUMN_GUESSES[role] if c in available), None)
    for role in ("audio", "text"):
        if chosen[role] is None:
            raise ManifestError(
                f"{spec.display} ({layout}): no {role} column (looked for {', '.join(COLUMN_GUESSES[role])}); "
                f"columns: {', '.join(available) or 'none'}. Name it: {spec.display}?{role}=COLUMN"
            )
    return chosen


def _rows_to_utterances(table, columns: dict[str, str | None], spec: DataSpec) -> tuple[list[Utterance], list[RowProblem], str]:
    """Rows to utterances; ids made unique; a digest of what the rows say (ids, texts, speakers,
    durations, audio file names and embedded audio bytes), the dataset's counterpart of a
    manifest file's SHA-256."""
    digest = hashlib.sha256()
    utterances, problems = [], []
    wanted = [c for c in dict.fromkeys(columns.values()) if c]
    for index, row in enumerate(table.rows(wanted)):
        source = f"{spec.display}[{index}]"
        digest.update(_row_digest(row, columns))
        try:
            utterances.append(_utterance(row, columns, table.base, source, index, spec))
        except ManifestError as error:
            problems.append(RowProblem(source, error.args[1] if len(error.args) > 1 else "bad row", error.args[0]))
    return _unique_ids(utterances), problems, digest.hexdigest()


def _row_digest(row: dict, columns: dict[str, str | None]) -> bytes:
    values = []
    for role in COLUMN_ROLES:
        value = row.get(columns[role]) if columns[role] else None
        if isinstance(value, dict):
            data = value.get("bytes")
            value = {"path": value.get("path"), "sha1": hashlib.sha1(data).hexdigest() if data else None}
        elif isinstance(value, bytes):
            value = {"sha1": hashlib.sha1(value).hexdigest()}
        values.append(value)
    return json.dumps(values, default=str).encode()


def _utterance(row: dict, columns: dict[str, str | None], base: Path | None, source: str, index: int, spec: DataSpec) -> Utterance:
    data, path = _audio_reference(row.get(columns["audio"]))
    text = row.get(columns["text"])
    if text is None:
        raise ManifestError(f"no transcript in column {columns['text']!r}", "missing field")
    text, duration = transcript_and_duration(text, row.get(columns["duration"]) if columns["duration"] else None)
    if data is None:
        audio_path = _resolve_audio(path, base)
    else:
        audio_path = source  # embedded audio: the row itself is where it lives
    row_id = row.get(columns["id"]) if columns["id"] else None
    speaker = row.get(columns["speaker"]) if columns["speaker"] else None
    return Utterance(
        id=str(row_id) if row_id not in (None, "") else (Path(path).stem if path else f"{Path(spec.location).name}-{index}"),
        audio_path=audio_path,
        text=text,
        duration=duration,
        speaker=str(speaker) if speaker is not None else "",
        source=source,
        audio_bytes=data,
    )


def _audio_reference(value: Any) -> tuple[bytes | None, str | None]:
    """(bytes, path) from an audio cell: a datasets Audio struct {bytes, path}, bytes, or a path."""
    if isinstance(value, dict):
        if "array" in value:
            raise ManifestError("the audio column holds decoded samples; save the dataset with "
                                "Audio(decode=False) or as files", "unsupported audio")
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data, path = bytes(value), None
    else:
        data, path = None, value
    if not data and not (isinstance(path, str) and path.strip()):
        raise ManifestError("no audio (neither bytes nor a path)", "missing field")
    return (bytes(data) if data else None), path


def _resolve_audio(path: str, base: Path | None) -> str:
    audio = Path(path).expanduser()
    if not audio.is_absolute():
        if base is None:
            raise ManifestError(f"audio path {path!r} is relative and the dataset has no folder to take it against",
                                "missing audio")
        audio = base / audio
    return str(audio.resolve())


def _unique_ids(utterances: list[Utterance]) -> list[Utterance]:
    """Ids taken from file names can repeat (the same clip name in two folders): add the row."""
    import dataclasses

    counts = Counter(u.id for u in utterances)
    if all(n == 1 for n in counts.values()):
        return utterances
    return [dataclasses.replace(u, id=f"{u.id}-{u.source.rsplit('[', 1)[-1].rstrip(']')}") if counts[u.id] > 1 else u
            for u in utterances]


def _file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- recipe paths


def resolve_spec(text: str, resolve_path) -> str:
    """The spec with its location made absolute by ``resolve_path`` (the recipe's own path
    rule); a hub id stays as it is."""
    spec = DataSpec.parse(text)
    if looks_like_hub_id(spec.location) and not os.path.exists(resolve_path(spec.location)):
        return text
    return str(spec.with_location(resolve_path(spec.location)))


def default_name(text: str) -> str:
    """An eval set's name when only a spec is given: its split, else the file or folder name."""
    spec = DataSpec.parse(text)
    return spec.split or Path(spec.location).stem
