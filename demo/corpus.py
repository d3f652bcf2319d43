"""Synthesise the demo corpus: two acoustic domains of espeak-ng speech with manifests.

    python -m demo.corpus --out data/demo --seed 0

Source domain (several voices at normal speed) is what the demo model is pretrained on;
target domain (other voices, faster and higher) is what LoRA adapts it to. Written:

    data/demo/canary.jsonl    source-domain utterances, sentences seen nowhere else
    data/demo/dev.jsonl       target-domain, the set a sweep optimises and selects on
    data/demo/test.jsonl      target-domain, the set repro confirms on (a sweep never scores it)
    data/demo/train.jsonl     target-domain adaptation data
    data/demo/source/         pretraining corpus and two monitoring sets (not committed)

Every split draws its sentences from one seeded stream, so no sentence occurs in two
splits. The committed sets come first in that stream and deal COMMITTED_SENTENCES
sentences between them; the pretraining corpus comes after, so resizing the committed
sets without keeping that total would change the corpus the bundled model was trained on. Audio is 16 kHz mono Ogg/Opus: lossless FLAC of this speech takes ~18 KB per
second, seven times what the committed bundle can afford.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from multiprocessing import Pool
from pathlib import Path

from demo.sentences import sentence_stream

SAMPLING_RATE = 16000
# libsndfile's Opus setting: 0.95 gives ~20 kbit/s (2.5 KB per second of speech), against
# ~29 kbit/s at its default; the bytes saved buy more adaptation data in the bundle.
OPUS_COMPRESSION = 0.95


@dataclass(frozen=True)
class Speaker:
    """An espeak-ng voice (language + variant) at a base speed (words/min) and pitch (0-99)."""

    voice: str
    speed: int
    pitch: int


# Normal speed, low-to-mid pitch, British ("en", espeak's default English) and American
# accents, espeak's standard male and female variants. Sixteen voices, not a handful: a
# model pretrained on few voices is so narrow that adapting it to the target domain wrecks
# its source-domain accuracy. (espeak-ng 1.51 ignores a variant after "en-gb": "en-gb+f1"
# sounds exactly like "en-gb", hence "en+f1".)
SOURCE_SPEAKERS = (
    Speaker("en-us+m1", 165, 45),
    Speaker("en-us+f2", 155, 55),
    Speaker("en+m3", 160, 40),
    Speaker("en+f1", 170, 50),
    Speaker("en-us+m2", 150, 35),
    Speaker("en-gb-x-rp+f4", 160, 55),
    Speaker("en-us+m7", 170, 45),
    Speaker("en+f5", 155, 50),
    Speaker("en-us+m3", 160, 40),
    Speaker("en+m1", 150, 45),
    Speaker("en-us+f1", 165, 50),
    Speaker("en+m2", 170, 35),
    Speaker("en-us+f5", 160, 55),
    Speaker("en+m7", 155, 40),
    Speaker("en-gb-x-rp+m2", 165, 45),
    Speaker("en-gb-x-rp+f1", 150, 60),
)
# Other variants and regional accents, ~1.3x faster, higher pitch. Each factor was tuned
# against the pretrained model (README): at 250 words/min alone WER passes 60 %, so the
# speeds sit where the gap is large but learnable. Twelve speakers, so the dev and test
# sets have enough for a speaker-block bootstrap (>= 10).
TARGET_SPEAKERS = (
    Speaker("en-us+norbert", 185, 60),
    Speaker("en-us+victor", 190, 65),
    Speaker("en-gb-scotland+m5", 180, 60),
    Speaker("en-gb-x-gbcwmd+m4", 180, 60),
    Speaker("en-029+m3", 175, 55),
    Speaker("en-us-nyc+m4", 190, 65),
    Speaker("en-gb-x-gbclan+m7", 190, 65),
    Speaker("en-gb-scotland+f3", 185, 60),
    Speaker("en-029+m6", 185, 60),
    Speaker("en-us-nyc+m6", 190, 65),
    Speaker("en-gb-x-gbcwmd+f2", 185, 60),
    Speaker("en-us+shelby", 175, 55),
)
SPEED_JITTER = 10  # words/min either side, per utterance
PITCH_JITTER = 6


@dataclass(frozen=True)
class Split:
    """One manifest: its name, folder (relative to --out), speakers and size."""

    name: str
    folder: str
    speakers: tuple[Speaker, ...]
    count: int

    @property
    def prefix(self) -> str:
        return f"{self.folder}-{self.name}" if self.folder else self.name


@dataclass(frozen=True)
class Job:
    """One utterance to synthesise, with everything the worker process needs."""

    id: str
    text: str
    speaker: Speaker
    speed: int
    pitch: int
    audio_path: Path


# Committed split sizes (the CLI defaults). Balanced over the voices: 14 per source voice
# in the canary, 12 / 20 / 61 per target voice in dev / test / train. data/demo/README.md
# says why these sizes.
CANARY_UTTERANCES = 224
DEV_UTTERANCES = 144
TEST_UTTERANCES = 240
TRAIN_UTTERANCES = 732
# Sentences the committed sets take from the stream before the pretraining corpus's
# splits. The bundled model (model/pretraining.json) was pretrained on the source corpus
# dealt after 1,340 sentences (then: canary 100, held-out 240, train 1,000); another total
# would regenerate a different corpus from the one the model saw.
COMMITTED_SENTENCES = 1340
MONITOR_UTTERANCES = 48  # per domain, under source/: what pretraining prints WER on


def plan_splits(source: int, train: int, dev: int, test: int, canary: int, monitor: int) -> list[Split]:
    """Order matters: sentences are dealt out in this order, so the committed sets (first)
    stay the same whatever size of pretraining corpus (last) is asked for, and the
    pretraining corpus stays the same as long as the committed sets deal
    COMMITTED_SENTENCES between them (and ``monitor`` stays MONITOR_UTTERANCES)."""
    return [
        Split("canary", "", SOURCE_SPEAKERS, canary),
        Split("dev", "", TARGET_SPEAKERS, dev),
        Split("test", "", TARGET_SPEAKERS, test),
        Split("train", "", TARGET_SPEAKERS, train),
        Split("dev_source", "source", SOURCE_SPEAKERS, monitor),
        Split("dev_target", "source", TARGET_SPEAKERS, monitor),
        Split("train", "source", SOURCE_SPEAKERS, source),
    ]


def plan_jobs(splits: list[Split], out: Path, seed: int) -> dict[Split, list[Job]]:
    """Sentences from one stream; speakers in turn (balanced), speed and pitch jittered per split."""
    sentences = sentence_stream(seed)
    plan = {}
    for split in splits:
        r = random.Random(f"{seed}:{split.prefix}")
        jobs = []
        for index, text in enumerate(islice(sentences, split.count)):
            speaker = split.speakers[index % len(split.speakers)]
            utterance_id = f"{split.prefix}-{index:05d}"
            jobs.append(
                Job(
                    id=utterance_id,
                    text=text,
                    speaker=speaker,
                    speed=speaker.speed + r.randint(-SPEED_JITTER, SPEED_JITTER),
                    pitch=min(99, max(0, speaker.pitch + r.randint(-PITCH_JITTER, PITCH_JITTER))),
                    audio_path=out / split.folder / "audio" / f"{utterance_id}.ogg",
                )
            )
        plan[split] = jobs
    return plan


def synthesize(text: str, voice: str, speed: int, pitch: int):
    """espeak-ng speech resampled by sox to 16 kHz mono int16; -D: no dither, so the
    samples are a deterministic function of the text and voice."""
    import numpy as np

    espeak = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    wav = subprocess.run(espeak, capture_output=True, check=True).stdout
    sox = ["sox", "-D", "-t", "wav", "-", "-r", str(SAMPLING_RATE), "-c", "1", "-b", "16", "-e", "signed-integer", "-t", "raw", "-"]
    raw = subprocess.run(sox, input=wav, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<i2")


def encode_opus(samples, serial: int) -> bytes:
    """Ogg/Opus bytes of int16 samples at 16 kHz."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLING_RATE, format="OGG", subtype="OPUS", compression_level=OPUS_COMPRESSION)
    return with_ogg_serial(buffer.getvalue(), serial)


def with_ogg_serial(data: bytes, serial: int) -> bytes:
    """libsndfile gives each Ogg stream a random serial number; setting a fixed one (and
    the page checksums) makes a file's bytes depend on its audio alone."""
    out = bytearray(data)
    position = 0
    while position < len(out):
        if out[position : position + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {position}")
        segments = out[position + 26]
        size = 27 + segments + sum(out[position + 27 : position + 27 + segments])
        struct.pack_into("<II", out, position + 14, serial, struct.unpack_from("<I", out, position + 18)[0])
        struct.pack_into("<I", out, position + 22, 0)
        struct.pack_into("<I", out, position + 22, ogg_crc(out[position : position + size]))
        position += size
    return bytes(out)


@lru_cache(maxsize=1)
def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


def ogg_crc(page: bytes) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04C11DB7, not reflected, initial 0."""
    table, crc = _crc_table(), 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def run_job(job: Job) -> int:
    """Synthesise and write one utterance; returns its length in samples."""
    samples = synthesize(job.text, job.speaker.voice, job.speed, job.pitch)
    job.audio_path.write_bytes(encode_opus(samples, zlib.crc32(job.id.encode())))
    return len(samples)


def write_manifest(path: Path, jobs: list[Job], lengths: list[int]) -> None:
    """JSONL in the core's format; audio paths relative to the manifest's folder."""
    with path.open("w", encoding="utf-8") as manifest:
        for job, length in zip(jobs, lengths):
            row = {
                "id": job.id,
                "audio_filepath": job.audio_path.relative_to(path.parent).as_posix(),
                "text": job.text,
                "duration": round(length / SAMPLING_RATE, 4),
                "speaker": job.speaker.voice,
            }
            manifest.write(json.dumps(row) + "\n")


def build_corpus(out: Path, seed: int, splits: list[Split], workers: int = 2) -> dict[str, dict]:
    """Synthesise every split (in ``workers`` processes) and write its manifest.

    A split's old audio files are removed first so none of an earlier, larger run lingers;
    splits asked for 0 utterances are left as they are.
    """
    plan = plan_jobs(splits, out, seed)
    for split in splits:
        if split.count:
            (out / split.folder / "audio").mkdir(parents=True, exist_ok=True)
            for stale in (out / split.folder / "audio").glob(f"{split.prefix}-*.ogg"):
                stale.unlink()
    summary = {}
    with Pool(workers) as pool:
        for split, jobs in plan.items():
            if not jobs:
                continue
            lengths = pool.map(run_job, jobs, chunksize=16)
            manifest = out / split.folder / f"{split.name}.jsonl"
            write_manifest(manifest, jobs, lengths)
            summary[str(manifest.relative_to(out))] = {
                "utterances": len(jobs),
                "speakers": len({job.speaker for job in jobs}),
                "seconds": round(sum(lengths) / SAMPLING_RATE, 1),
                "bytes": sum(job.audio_path.stat().st_size for job in jobs),
            }
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    parser.add_argument("--seed", type=int, default=0, help="decides sentences, speaker order and jitter")
    parser.add_argument("--source-utterances", type=int, default=8000, help="pretraining corpus size")
    parser.add_argument("--train-utterances", type=int, default=TRAIN_UTTERANCES, help="target-domain adaptation set")
    parser.add_argument("--dev-utterances", type=int, default=DEV_UTTERANCES, help="target-domain set a sweep selects on")
    parser.add_argument("--test-utterances", type=int, default=TEST_UTTERANCES, help="target-domain set repro confirms on")
    parser.add_argument("--canary-utterances", type=int, default=CANARY_UTTERANCES, help="source-domain canary set")
    parser.add_argument("--monitor-utterances", type=int, default=MONITOR_UTTERANCES, help="per domain, to watch pretraining")
    parser.add_argument("--skip-source", action="store_true", help="write only the committed sets")
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        sys.exit("demo.corpus needs espeak-ng and sox on PATH (Debian: apt-get install espeak-ng sox)")
    committed = args.canary_utterances + args.dev_utterances + args.test_utterances + args.train_utterances
    if committed != COMMITTED_SENTENCES or (not args.skip_source and args.monitor_utterances != MONITOR_UTTERANCES):
        print(
            f"warning: the committed sets take {committed} sentences (the bundled model's corpus came after "
            f"{COMMITTED_SENTENCES}) and the monitoring sets {args.monitor_utterances} each (it had {MONITOR_UTTERANCES}): "
            "the pretraining corpus will differ from the one data/demo/model was trained on",
            file=sys.stderr,
        )
    splits = plan_splits(
        0 if args.skip_source else args.source_utterances,
        args.train_utterances,
        args.dev_utterances,
        args.test_utterances,
        args.canary_utterances,
        0 if args.skip_source else args.monitor_utterances,
    )
    started = time.perf_counter()
    summary = build_corpus(args.out, args.seed, splits, args.workers)
    for manifest, stats in summary.items():
        print(f"{manifest:24s} " + "  ".join(f"{key} {value}" for key, value in stats.items()))
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
