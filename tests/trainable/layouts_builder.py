"""Small real datasets in every layout trainable.sources reads, built from manifest rows.

Each builder writes the same utterances (ids, texts, speakers, audio) as the manifest rows it
is given, the way users' tools write them: ``datasets`` itself for save_to_disk and parquet
(audio bytes embedded), plain files for an audiofolder, and a Common Voice release layout
with MP3 clips encoded by soundfile (libsndfile >= 1.1). Nothing here is committed: tests
build them in temporary folders.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import soundfile


def _audio(manifest_dir: Path, row: dict) -> Path:
    return manifest_dir / row["audio_filepath"]


def _dataset(manifest_dir: Path, rows: list[dict]):
    """Audio file paths cast to ``Audio()``, as users build one; saving embeds the files' bytes."""
    import datasets

    return datasets.Dataset.from_dict({
        "id": [r["id"] for r in rows],
        "audio": [str(_audio(manifest_dir, r)) for r in rows],
        "sentence": [r["text"] for r in rows],
        "client_id": [r["speaker"] for r in rows],
    }).cast_column("audio", datasets.Audio())


def save_to_disk(out: Path, manifest_dir: Path, splits: dict[str, list[dict]]) -> Path:
    """A DatasetDict saved with ``save_to_disk``: audio bytes embedded in Arrow files."""
    import datasets

    datasets.DatasetDict({name: _dataset(manifest_dir, rows) for name, rows in splits.items()}).save_to_disk(str(out))
    return out


def parquet(out: Path, manifest_dir: Path, splits: dict[str, list[dict]]) -> Path:
    """Parquet shards in the hub's layout (``data/<split>-00000-of-00001.parquet``), audio bytes
    embedded as ``push_to_hub`` embeds them (``to_parquet`` alone would keep the paths)."""
    from datasets.table import embed_table_storage

    for name, rows in splits.items():
        (out / "data").mkdir(parents=True, exist_ok=True)
        embedded = _dataset(manifest_dir, rows).with_format("arrow").map(embed_table_storage, batched=True)
        embedded.with_format(None).to_parquet(str(out / "data" / f"{name}-00000-of-00001.parquet"))
    return out


def audiofolder(out: Path, manifest_dir: Path, splits: dict[str, list[dict]]) -> Path:
    """``<split>/clips/*.wav`` plus ``<split>/metadata.csv`` (file_name, transcription, speaker_id)."""
    for name, rows in splits.items():
        folder = out / name
        (folder / "clips").mkdir(parents=True, exist_ok=True)
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "transcription", "speaker_id"])
            for row in rows:
                target = folder / "clips" / Path(row["audio_filepath"]).name
                shutil.copyfile(_audio(manifest_dir, row), target)
                writer.writerow([f"clips/{target.name}", row["text"], row["speaker"]])
    return out


def common_voice(out: Path, manifest_dir: Path, splits: dict[str, list[dict]]) -> dict[str, Path]:
    """A Common Voice release: ``clips/*.mp3`` (encoded here), ``<split>.tsv``, ``clip_durations.tsv``.
    Returns, per split, a manifest over the same MP3 clips: the equivalent a user would write."""
    (out / "clips").mkdir(parents=True, exist_ok=True)
    header = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age", "gender", "accents", "variant", "locale", "segment"]
    durations, manifests = [], {}
    for name, rows in splits.items():
        lines, manifest_rows = ["\t".join(header)], []
        for row in rows:
            samples, rate = soundfile.read(_audio(manifest_dir, row), dtype="float32")
            clip = f"common_voice_en_{row['id']}.mp3"
            soundfile.write(out / "clips" / clip, samples, rate, format="MP3")
            durations.append(f"{clip}\t{round(1000 * len(samples) / rate)}")
            lines.append("\t".join([row["speaker"], clip, "s" + row["id"], row["text"], "", "2", "0", "", "", "", "", "en", ""]))
            manifest_rows.append({"id": Path(clip).stem, "audio_filepath": f"clips/{clip}", "text": row["text"], "speaker": row["speaker"]})
        (out / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        manifests[name] = out / f"{name}_manifest.jsonl"
        manifests[name].write_text("".join(json.dumps(r) + "\n" for r in manifest_rows))
    (out / "clip_durations.tsv").write_text("clip\tduration[ms]\n" + "\n".join(durations) + "\n")
    return manifests
