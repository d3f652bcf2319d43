"""One reader per dataset layout, each giving the same thing: a ``Table`` of rows.

The local layouts are read with pyarrow and the csv module, and audio cells are kept as
the bytes or path they hold (soundfile decodes them later, as for a manifest): no
``datasets`` package and no audio decoder of its own are needed for them, and nothing is
copied into a cache. Only a hub id loads ``datasets`` (an optional extra), with its audio
decoding switched off.

Splits are named the way each layout names them: a DatasetDict's split folders, parquet
files or folders named after the split (``data/train-00000-of-00002.parquet``,
``train/0.parquet``, ``test.parquet``), an audiofolder's split folders, a Common Voice
release's ``<split>.tsv``. A source that holds several splits must be given one, so train
and test rows are never mixed by accident.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from trainable.manifest import ManifestError, RowProblem, delimited_rows

METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
# A location holding one of these is a glob pattern of files.
GLOB_CHARS = ("*", "?", "[")
# Common Voice .tsv files that do not list utterances of a split.
COMMON_VOICE_NON_SPLITS = frozenset({"reported", "clip_durations", "unvalidated_sentences", "validated_sentences", "times"})
# Words that name a split in file and folder names (as datasets' own SPLIT_KEYWORDS).
SPLIT_WORDS = frozenset({"train", "training", "validation", "valid", "dev", "val", "test", "testing", "eval", "evaluation"})
_SHARD = re.compile(r"^(?P<split>.+?)-\d+-of-\d+$")


@dataclass(frozen=True)
class Table:
    """A dataset's rows: its column names, a reader of the named columns, and the folder a
    relative audio path in it is taken against (None: no folder, e.g. the hub)."""

    columns: tuple[str, ...]
    rows: Callable[[list[str]], Iterator[dict]]
    base: Path | None


def read_table(layout: str, spec) -> Table:
    """``spec`` is a ``trainable.sources.DataSpec``: location, split and options."""
    readers = {
        "save_to_disk": read_save_to_disk,
        "parquet": read_parquet,
        "audiofolder": read_audiofolder,
        "common_voice": read_common_voice,
        "hub": read_hub,
    }
    return readers[layout](spec)


def pick_split(spec, available: list[str], what: str) -> str:
    """The spec's split if the source has it; the only split if there is one; else an error."""
    if spec.split:
        if spec.split not in available:
            raise ManifestError(f"{spec.location}: no split {spec.split!r} in this {what}; splits: {', '.join(available) or 'none'}")
        return spec.split
    if len(available) == 1:
        return available[0]
    raise ManifestError(
        f"{spec.location}: this {what} holds several splits ({', '.join(available)}); name one, e.g. {spec.location}:{available[0]}"
    )


# --------------------------------------------------------------------------- save_to_disk


def read_save_to_disk(spec) -> Table:
    """A ``Dataset.save_to_disk`` folder (state.json + Arrow stream files) or a
    ``DatasetDict`` one (dataset_dict.json + a folder per split)."""
    folder = Path(spec.location).expanduser()
    if (folder / "dataset_dict.json").is_file():
        splits = _json(folder / "dataset_dict.json").get("splits", [])
        folder = folder / pick_split(spec, list(splits), "DatasetDict")
    elif spec.split:
        raise ManifestError(f"{spec.location}: a single saved Dataset (state.json), which has no split {spec.split!r}; drop ':{spec.split}'")
    state = _json(folder / "state.json")
    if state.get("_indices_data_files"):
        raise ManifestError(f"{folder}: saved with an indices mapping; save it again with Dataset.flatten_indices() first")
    files = [folder / entry["filename"] for entry in state.get("_data_files", [])]
    if not files:
        raise ManifestError(f"{folder}/state.json lists no data files")
    return Table(_arrow_columns(files[0]), lambda columns: _arrow_rows(files, columns), folder)


def _arrow_columns(path: Path) -> tuple[str, ...]:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return tuple(pa.ipc.open_stream(source).schema.names)


def _arrow_rows(files: list[Path], columns: list[str]) -> Iterator[dict]:
    import pyarrow as pa

    for path in files:
        with pa.memory_map(str(path)) as source:
            for batch in pa.ipc.open_stream(source):
                yield from batch.select(columns).to_pylist()


# --------------------------------------------------------------------------- parquet


def read_parquet(spec) -> Table:
    """A parquet file, a glob of them, or a folder of them (split from file or folder names)."""
    import pyarrow.parquet as pq

    files, base = _parquet_files(spec)
    columns = tuple(pq.read_schema(files[0]).names)
    for path in files[1:]:
        if tuple(pq.read_schema(path).names) != columns:
            raise ManifestError(f"{path}: its columns differ from those of {files[0]} ({', '.join(columns)})")
    return Table(columns, lambda wanted: _parquet_rows(files, wanted), base)


def _parquet_files(spec) -> tuple[list[Path], Path]:
    location = os.path.expanduser(spec.location)
    if any(char in location for char in GLOB_CHARS):
        files = sorted(Path(p) for p in glob.glob(location, recursive=True))
        if not files:
            raise ManifestError(f"{spec.location}: the pattern matches no file")
        others = [p for p in files if p.suffix.lower() != ".parquet"]
        if others:
            raise ManifestError(f"{spec.location}: a glob must match parquet files only, it also matches {others[0]}")
        if spec.split:
            raise ManifestError(f"{spec}: a glob names its files itself; drop ':{spec.split}'")
        return files, files[0].parent
    path = Path(location)
    if path.is_file():
        if spec.split:
            raise ManifestError(f"{spec}: a single parquet file has no split; drop ':{spec.split}'")
        return [path], path.parent
    files = sorted(path.rglob("*.parquet"))
    by_split = {p: _split_names(p.relative_to(path)) for p in files}
    if spec.split:
        chosen = [p for p, names in by_split.items() if spec.split in names]
        if not chosen:
            found = sorted({n for names in by_split.values() for n in names if n in SPLIT_WORDS})
            raise ManifestError(f"{spec.location}: no parquet file or folder named after split {spec.split!r}; splits seen: {', '.join(found) or 'none'}")
        return chosen, path
    splits = sorted({n for names in by_split.values() for n in names if n in SPLIT_WORDS})
    if len(splits) > 1:
        raise ManifestError(f"{spec.location}: these parquet files hold several splits ({', '.join(splits)}); name one, e.g. {spec.location}:{splits[0]}")
    return files, path


def _split_names(relative: Path) -> set[str]:
    """The names a parquet file could be a split of: its folders, its stem, and the stem
    before a shard suffix (``train-00000-of-00002`` -> train)."""
    shard = _SHARD.match(relative.stem)
    return set(relative.parent.parts) | {relative.stem} | ({shard["split"]} if shard else set())


def _parquet_rows(files: list[Path], columns: list[str]) -> Iterator[dict]:
    import pyarrow.parquet as pq

    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(columns=columns, batch_size=256):
            yield from batch.to_pylist()


# --------------------------------------------------------------------------- audiofolder


def read_audiofolder(spec) -> Table:
    """Audio files plus metadata.csv / .jsonl / .parquet with a ``file_name`` column (relative
    to the metadata file's folder), as ``datasets``' audiofolder reads them; a folder per split."""
    root = Path(spec.location).expanduser()
    groups: dict[str, list[Path]] = {}
    for name in METADATA_FILES:
        for path in sorted(root.rglob(name)):
            parts = path.relative_to(root).parts
            groups.setdefault(parts[0] if len(parts) > 1 else "", []).append(path)
    named = sorted(groups)
    split = pick_split(spec, named, "audiofolder") if spec.split or len(named) > 1 else named[0]
    files = groups[split]
    if len({p.suffix for p in files}) > 1:
        raise ManifestError(f"{root}: metadata files of one split must share a format, found {', '.join(sorted(str(p) for p in files))}")
    columns = tuple(dict.fromkeys(c for path in files for c in _metadata_columns(path)))
    return Table(columns, lambda wanted: _metadata_rows(files, root, wanted), root)


def _metadata_columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(path).names
    first = next(_metadata_records(path), {})
    return list(first)


def _metadata_records(path: Path) -> Iterator[dict]:
    # utf-8-sig: a leading byte-order mark (Excel writes one) would otherwise stick to the first column's name
    if path.suffix == ".csv":
        yield from _metadata_csv_records(path, path.read_text(encoding="utf-8-sig"))
    elif path.suffix == ".jsonl":
        with open(path, encoding="utf-8-sig") as handle:
            for line, raw in enumerate(handle, start=1):
                if raw.strip():
                    try:
                        yield json.loads(raw)
                    except json.JSONDecodeError as error:
                        raise ManifestError(f"{path}:{line}: not valid JSON ({error.msg})") from None
    else:
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()


def _metadata_csv_records(path: Path, text: str) -> Iterator[dict]:
    """metadata.csv rows under its header line, one line a row as for a CSV manifest
    (trainable.manifest.delimited_rows): an unclosed quote is refused naming its line, where
    csv would join the rows after it into one transcript."""
    header = None
    for _, row in delimited_rows(path, text, ","):
        if isinstance(row, RowProblem):
            raise ManifestError(str(row))
        if not row:
            continue
        if header is None:
            header = row
            continue
        yield {name: row[i] if i < len(row) else None for i, name in enumerate(header)}


def _metadata_rows(files: list[Path], root: Path, columns: list[str]) -> Iterator[dict]:
    """Rows with every ``*file_name`` column made relative to the audiofolder's root."""
    for path in files:
        folder = path.parent.relative_to(root)
        for record in _metadata_records(path):
            row = {c: record.get(c) for c in columns}
            for column in columns:
                if column.endswith("file_name") and isinstance(row[column], str):
                    row[column] = str(folder / row[column])
            yield row


# --------------------------------------------------------------------------- Common Voice


def read_common_voice(spec) -> Table:
    """A Common Voice release folder: ``<split>.tsv`` (client_id, path, sentence, ...) and
    ``clips/``; durations from clip_durations.tsv where the release has it."""
    path = Path(spec.location).expanduser()
    if path.is_file():
        if spec.split:
            raise ManifestError(f"{spec}: names a .tsv file, which is one split already; drop ':{spec.split}'")
        tsv, folder = path, path.parent
    else:
        splits = {p.stem: p for p in sorted(path.glob("*.tsv")) if p.stem not in COMMON_VOICE_NON_SPLITS}
        tsv, folder = splits[pick_split(spec, sorted(splits), "Common Voice folder")], path
    durations = _clip_durations(folder / "clip_durations.tsv")
    header = tsv_header(tsv)
    columns = tuple(header) + (("duration",) if durations and "duration" not in header else ())
    return Table(columns, lambda wanted: _common_voice_rows(tsv, durations, wanted), folder / "clips")


def tsv_header(path: Path) -> list[str]:
    """The column names on a TSV file's first line."""
    with open(path, encoding="utf-8-sig") as handle:
        return handle.readline().rstrip("\n").split("\t")


def _clip_durations(path: Path) -> dict[str, float]:
    """clip name -> seconds, from a release's ``clip_durations.tsv`` (``clip<TAB>duration[ms]``)."""
    if not path.is_file():
        return {}
    durations = {}
    with open(path, encoding="utf-8-sig") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 2 and row[1].replace(".", "", 1).isdigit():
                durations[row[0]] = float(row[1]) / 1000
    return durations


def _common_voice_rows(tsv: Path, durations: dict[str, float], columns: list[str]) -> Iterator[dict]:
    # Common Voice writes its TSVs unquoted: a sentence may hold a lone '"'.
    with open(tsv, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            for row in reader:
                if durations and "duration" not in row:
                    row["duration"] = durations.get(row.get("path") or "")
                yield {c: row.get(c) for c in columns}
        except csv.Error as error:  # e.g. a field over csv's size limit: name the line, not a traceback
            # The inner reader's line count: DictReader's own lags a row behind when a row fails.
            raise ManifestError(f"{tsv}:{reader.reader.line_num}: cannot parse ({error})") from None


# --------------------------------------------------------------------------- hub


def read_hub(spec) -> Table:
    """``datasets.load_dataset(id, name=config, split=..., revision=..., streaming=...)`` with
    every Audio column cast to ``Audio(decode=False)``: the rows give the audio file's bytes
    and soundfile decodes them, as for every other layout."""
    try:
        import datasets
    except ImportError:
        raise ManifestError(
            f"{spec.location}: no such local file or folder; to read it as a Hugging Face hub dataset, "
            "install the datasets package: pip install 'moonshine-lora-sweeps[hub]'"
        ) from None
    if not spec.split:
        raise ManifestError(f"{spec.location}: name the split of the hub dataset, e.g. {spec.location}:train")
    streaming = str(spec.option("streaming") or "false").lower() in ("true", "1", "yes")
    try:
        dataset = datasets.load_dataset(spec.location, name=spec.option("config"), split=spec.split,
                                        revision=spec.option("revision"), streaming=streaming)
    except Exception as error:  # offline, no such dataset, gated, bad split or config: say which
        raise ManifestError(
            f"{spec.location}: no such local file or folder, and loading it as a Hugging Face hub dataset "
            f"(split {spec.split!r}) failed: {type(error).__name__}: {error}"
        ) from None
    for name, feature in (dataset.features or {}).items():
        if isinstance(feature, datasets.Audio):
            dataset = dataset.cast_column(name, datasets.Audio(decode=False))
    columns = tuple(dataset.features or dataset.column_names or next(iter(dataset), {}))
    return Table(columns, lambda wanted: iter(dataset.select_columns(wanted)), None)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: cannot read ({error})") from None
