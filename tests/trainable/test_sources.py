"""Datasets as users hold them: every layout gives the utterances, audio, WER and leakage
decisions of the equivalent manifest, and every bad spec or row is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import layouts_builder as build
from conftest import make_rows, write_manifest
from trainable.config import TrialConfig, parse_eval_manifest
from trainable.config_io import ConfigError
from trainable.data import LeakageError, ModelLimits, check_overlap, prepare_set
from trainable.manifest import ManifestError
from trainable.sources import DataSpec, read_source

pytest.importorskip("datasets")  # the test extra: datasets writes the save_to_disk and parquet layouts

LIMITS = ModelLimits(sampling_rate=16000, max_audio_seconds=None, max_label_tokens=None)
LAYOUTS = ("save_to_disk", "parquet", "audiofolder")


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """train (6) and test (3) utterances as manifests, and the same in every dataset layout."""
    root = tmp_path_factory.mktemp("layouts")
    splits = {"train": make_rows(root, "train", 6, seed=1), "test": make_rows(root, "test", 3, seed=2)}
    manifests = {name: write_manifest(root / f"{name}.jsonl", rows) for name, rows in splits.items()}
    return {
        "root": root,
        "manifests": manifests,
        "save_to_disk": build.save_to_disk(root / "saved", root, splits),
        "parquet": build.parquet(root / "parquet", root, splits),
        "audiofolder": build.audiofolder(root / "clips", root, splits),
        "common_voice": root / "cv",
        "common_voice_manifests": build.common_voice(root / "cv", root, splits),
    }


def facts(utterance_set) -> list[tuple]:
    return [(u.text, u.speaker) for u in utterance_set.utterances]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_gives_the_manifests_utterances_and_audio(planted, layout):
    for split in ("train", "test"):
        manifest = prepare_set(split, str(planted["manifests"][split]), LIMITS)
        dataset = prepare_set(split, f"{planted[layout]}:{split}", LIMITS)
        assert dataset.layout == layout
        assert facts(dataset) == facts(manifest)
        assert dataset.audio_hashes == manifest.audio_hashes
        assert [u.id for u in dataset.utterances] == [u.id for u in manifest.utterances]


def test_common_voice_mp3_clips_match_a_manifest_over_the_same_clips(planted):
    import soundfile

    assert soundfile.__libsndfile_version__ >= "1.1"  # MP3 support
    for split in ("train", "test"):
        dataset = prepare_set(split, f"{planted['common_voice']}:{split}", LIMITS)
        manifest = prepare_set(split, str(planted["common_voice_manifests"][split]), LIMITS)
        assert facts(dataset) == facts(manifest) and dataset.audio_hashes == manifest.audio_hashes
        assert [u.id for u in dataset.utterances] == [u.id for u in manifest.utterances]
        assert dataset.columns["text"] == "sentence" and dataset.columns["speaker"] == "client_id"
        # clip_durations.tsv gives each row its duration (milliseconds in the file)
        assert all(abs(u.duration - len(a) / 16000) < 0.06 for u, a in zip(dataset.utterances, dataset.audio))
    # the .tsv named directly is the same split
    direct = read_source(str(planted["common_voice"] / "test.tsv"))
    assert direct.layout == "common_voice" and len(direct.utterances) == 3


def test_embedded_bytes_and_files_are_read_alike_and_hash_alike(planted):
    saved = read_source(f"{planted['save_to_disk']}:train")
    parquet = read_source(f"{planted['parquet']}:train")
    assert all(u.audio_bytes for u in saved.utterances) and all(u.audio_bytes for u in parquet.utterances)
    assert saved.utterances[2].source == f"{planted['save_to_disk']}:train[2]"
    assert saved.sha256 == parquet.sha256  # same rows, same bytes
    glob = read_source(f"{planted['parquet']}/data/train-*.parquet")
    assert [u.text for u in glob.utterances] == [u.text for u in parquet.utterances]
    folder = read_source(f"{planted['audiofolder']}:train")
    assert folder.utterances[0].audio_bytes is None and Path(folder.utterances[0].audio_path).is_file()


def test_leakage_guard_sees_the_same_audio_across_layouts(planted):
    train = prepare_set("train", str(planted["manifests"]["train"]), LIMITS)
    for layout in LAYOUTS:
        leaked = prepare_set("leak", f"{planted[layout]}:train", LIMITS)
        with pytest.raises(LeakageError, match="6 of 6 utterances of eval set 'leak'"):
            check_overlap(train, [leaked], allow=False)
        clean = prepare_set("test", f"{planted[layout]}:test", LIMITS)
        assert check_overlap(train, [clean], allow=False)["test"]["count"] == 0
    saved = prepare_set("train", f"{planted['save_to_disk']}:train", LIMITS)
    assert check_overlap(saved, [prepare_set("eval", f"{planted['parquet']}:train", LIMITS)], allow=True)["eval"]["count"] == 6


def scores(evals: dict) -> dict:
    """A run's WER reports without ``decoded_by``: the later runs read the first one's cached baseline."""
    return {name: {system: {k: v for k, v in report.items() if k != "decoded_by"} for system, report in systems.items()}
            for name, systems in evals.items()}


def test_same_wer_as_the_manifest_end_to_end(planted, tiny_config, tmp_path):
    from trainable.pipeline import train_and_evaluate

    def run(train: str, test: str, name: str) -> dict:
        config = tiny_config.replace(train_manifest=train, eval_manifests=(("test", test),), output_dir=str(tmp_path / name))
        return train_and_evaluate(config)

    manifest = run(str(planted["manifests"]["train"]), str(planted["manifests"]["test"]), "manifest")
    for layout in ("save_to_disk", "audiofolder"):
        dataset = run(f"{planted[layout]}:train", f"{planted[layout]}:test", layout)
        assert scores(dataset["evals"]) == scores(manifest["evals"]), layout
        assert dataset["final_train_loss"] == manifest["final_train_loss"]
        assert dataset["data_report"]["sets"]["train"]["layout"] == layout


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize("text, location, split, options", [
    ("data/ds:train", "data/ds", "train", ()),
    ("data/ds:train?text=normalized_text&speaker=spk", "data/ds", "train", (("speaker", "spk"), ("text", "normalized_text"))),
    ("openslr/librispeech_asr:test.clean?config=clean", "openslr/librispeech_asr", "test.clean", (("config", "clean"),)),
    ("data/*.parquet", "data/*.parquet", None, ()),
    ("data/train.jsonl", "data/train.jsonl", None, ()),
    ("s3://bucket/train.jsonl", "s3://bucket/train.jsonl", None, ()),
])
def test_spec_parts(text, location, split, options):
    spec = DataSpec.parse(text)
    assert (spec.location, spec.split, spec.options) == (location, split, options)
    assert DataSpec.parse(str(spec)) == spec


def test_bad_specs_are_config_errors_naming_the_field():
    with pytest.raises(ConfigError, match=r"eval_manifests\.dev: .*unknown option 'txt'"):
        TrialConfig(eval_manifests=(("dev", "data/ds:test?txt=sentence"),))
    with pytest.raises(ConfigError, match="train_manifest: .*not KEY=VALUE"):
        TrialConfig(train_manifest="data/ds:train?text=")


def test_eval_names_and_field_aliases():
    assert parse_eval_manifest("dev=data/cv:test?text=sentence") == ("dev", "data/cv:test?text=sentence")
    assert parse_eval_manifest("data/cv:test?text=sentence") == ("test", "data/cv:test?text=sentence")
    assert parse_eval_manifest("data/heldout.jsonl") == ("heldout", "data/heldout.jsonl")
    config = TrialConfig.from_dict({"train_dataset": "data/cv:train", "eval_datasets": {"dev": "data/cv:dev"}})
    assert config.train_manifest == "data/cv:train" and config.eval_manifests == (("dev", "data/cv:dev"),)
    assert "train_dataset" not in config.to_dict()
    with pytest.raises(ConfigError, match="one field"):
        TrialConfig.from_dict({"train_dataset": "a", "train_manifest": "b"})


def test_resolved_makes_dataset_locations_absolute_and_keeps_hub_ids(planted, monkeypatch):
    monkeypatch.chdir(planted["root"])
    config = TrialConfig(train_manifest="saved:train?text=sentence",
                         eval_manifests=(("test", "openslr/librispeech_asr:test.clean?config=clean"),)).resolved()
    assert config.train_manifest == f"{planted['save_to_disk']}:train?text=sentence"
    assert config.eval_manifests == (("test", "openslr/librispeech_asr:test.clean?config=clean"),)


def test_old_recipes_with_manifest_fields_load_unchanged(tmp_path):
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"config": {"train_manifest": "data/demo/train.jsonl",
                                           "eval_manifests": [["heldout", "data/demo/heldout.jsonl"]], "lora_r": 4}}))
    config = TrialConfig.from_file(best)
    assert config.train_manifest == "data/demo/train.jsonl" and config.eval_manifests == (("heldout", "data/demo/heldout.jsonl"),)
    assert config.strict_text is False and config.text_normalize is False


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("suffix, expected", [
    ("", "several splits (train, test); name one"),
    (":dev", "no split 'dev' in this DatasetDict; splits: train, test"),
    (":train?text=words", "no column 'words' (given as ?text=); columns: id, audio, sentence, client_id"),
])
def test_split_and_column_errors_say_what_there_is(planted, suffix, expected):
    with pytest.raises(ManifestError) as error:
        read_source(f"{planted['save_to_disk']}{suffix}")
    assert expected in str(error.value)


def test_parquet_and_audiofolder_refuse_to_mix_splits(planted):
    for layout in ("parquet", "audiofolder", "common_voice"):
        with pytest.raises(ManifestError, match="several splits"):
            read_source(str(planted[layout]))


def test_a_missing_text_column_names_the_columns_and_how_to_choose(tmp_path, planted):
    folder = tmp_path / "af"
    shutil.copytree(planted["audiofolder"] / "test", folder)
    (folder / "metadata.csv").write_text("file_name,words\nclips/test0.wav,hello\n")
    with pytest.raises(ManifestError) as error:
        read_source(str(folder))
    assert "no text column (looked for sentence, text, transcription, transcript); columns: file_name, words" in str(error.value)
    assert f"{folder}?text=COLUMN" in str(error.value)
    assert read_source(f"{folder}?text=words").utterances[0].text == "hello"


def test_bad_dataset_rows_are_named_by_dataset_and_row(tmp_path, planted):
    import datasets

    saved = datasets.load_from_disk(str(planted["save_to_disk"]))["test"]
    broken = saved.cast_column("audio", datasets.Audio(decode=False)).map(
        lambda row, i: {"audio": {"bytes": b"not audio" if i == 1 else row["audio"]["bytes"], "path": row["audio"]["path"]},
                        "sentence": "" if i == 2 else row["sentence"]},
        with_indices=True,
    )
    broken.save_to_disk(str(tmp_path / "broken"))
    spec = f"{tmp_path / 'broken'}"
    with pytest.raises(ManifestError) as error:
        prepare_set("test", spec, LIMITS)
    message = str(error.value)
    assert "2 bad row(s)" in message
    assert f"{spec}[1]: unreadable or corrupt audio {spec}[1]: Format not recognised" in message
    assert f"{spec}[2]: empty transcript" in message and message.count(f"{spec}[2]") == 1  # the row named once
    kept = prepare_set("test", spec, LIMITS, on_bad_row="skip")
    assert len(kept) == 1 and kept.skipped == {"unreadable audio": 1, "empty text": 1}


def test_max_duration_applies_to_datasets(planted):
    full = prepare_set("train", f"{planted['parquet']}:train", LIMITS)
    cut = prepare_set("train", f"{planted['parquet']}:train", LIMITS, max_duration=0.8)
    longer = sum(1 for a in full.audio if len(a) / 16000 > 0.8)
    assert longer and len(cut) == len(full) - longer and cut.skipped == {"longer than max_duration": longer}


def test_a_path_that_is_not_there_is_named(tmp_path):
    with pytest.raises(ManifestError, match="no such file or folder"):
        read_source(str(tmp_path / "nothing:train"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="not a dataset folder this tool reads"):
        read_source(str(tmp_path / "empty"))


# --------------------------------------------------------------------------- the hub


def test_hub_code_path_through_load_dataset(planted, monkeypatch):
    """The hub reader is ``datasets.load_dataset`` with audio decoding off. The hub itself cannot
    be reached here, so this runs the same call on a local folder, which load_dataset reads the
    way it reads a hub repository of parquet files."""
    from trainable.layouts import read_hub

    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", planted["root"] / "hf-cache")  # not the user's cache
    reference = [u.text for u in read_source(f"{planted['parquet']}:test").utterances]
    for streaming in ("false", "true"):
        spec = DataSpec.parse(f"{planted['parquet']}:test?streaming={streaming}")
        table = read_hub(spec)
        rows = list(table.rows(["audio", "sentence"]))
        assert [r["sentence"] for r in rows] == reference
        assert all(r["audio"]["bytes"][:4] == b"RIFF" for r in rows)  # the file's bytes, not decoded samples


def test_hub_ids_without_datasets_say_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ManifestError, match=r"install the datasets package: pip install 'moonshine-lora-sweeps\[hub\]'"):
        read_source("someone/some_speech:train")
    with pytest.raises(ManifestError, match="name the split"):
        monkeypatch.setattr(builtins, "__import__", real_import)
        read_source("someone/some_speech")
