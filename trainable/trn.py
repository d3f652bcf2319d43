"""NIST ``trn`` transcripts of an eval set, so NIST's ``sclite`` and ``sc_stats`` can score what we scored.

One reference file and one hypothesis file per system, on Whisper-normalised text (the text
the project's WER is computed on); utterances whose normalised reference is empty are left
out, as the corpus WER leaves them out. A line is ``words (speaker-utterance)``: sclite reads
the speaker from the id up to its first ``-``, so a ``-`` inside a speaker name becomes ``_``,
and whitespace or parentheses, which would end the id, become ``_`` too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from trainable.files import atomic_write_text
from trainable.wer import normalise

FOLDER = "trn"
UNKNOWN_SPEAKER = "unknown"
# What a user runs on the files (Debian/Ubuntu: apt install sctk, then `sctk sclite ...`).
SCLITE_COMMAND = "sclite -e utf-8 -i rm -r {reference} trn -h {hypothesis} trn -o sum stdout"


def trn_id(speaker: str | None, utterance_id: str) -> str:
    """sclite's ``speaker-utterance`` id: the speaker has no ``-``, neither part has a space or parenthesis."""
    speaker = re.sub(r"[\s()-]", "_", str(speaker or "")) or UNKNOWN_SPEAKER
    utterance = re.sub(r"[\s()]", "_", str(utterance_id))
    return f"{speaker}-{utterance}"


def trn_lines(rows: Iterable[Mapping[str, Any]], field: str, where: str) -> str:
    """One line per scored utterance: the normalised ``field`` text and the id. ``rows`` carry
    ``id``, ``speaker``, ``ref_words`` and the text fields, as a WER report's utterances do."""
    lines, seen = [], {}
    for row in rows:
        if row["ref_words"] <= 0:
            continue
        identifier = trn_id(row.get("speaker"), row["id"])
        if identifier in seen:
            raise ValueError(f"{where}: utterances {seen[identifier]!r} and {row['id']!r} get the same trn id {identifier!r}")
        seen[identifier] = row["id"]
        lines.append(f"{normalise(row[field])} ({identifier})\n")
    return "".join(lines)


def write_trn(path: Path, rows: Iterable[Mapping[str, Any]], field: str) -> Path:
    """The ``reference`` or ``hypothesis`` transcripts of ``rows`` as one trn file, atomically."""
    atomic_write_text(path, trn_lines(rows, field, str(path)))
    return path


def write_eval_set_trn(directory: Path, name: str, reports: Mapping[str, Mapping[str, Any]]) -> dict[str, Path]:
    """``<name>_reference.trn`` and ``<name>_<system>.trn`` per system from one eval set's WER
    reports by system; returns the paths by ``reference`` and system."""
    rows = {system: report["utterances"] for system, report in reports.items()}
    paths = {"reference": write_trn(Path(directory) / f"{name}_reference.trn", next(iter(rows.values())), "reference")}
    for system, utterances in rows.items():
        paths[system] = write_trn(Path(directory) / f"{name}_{system}.trn", utterances, "hypothesis")
    return paths


def sclite_command(reference: Path | str, hypothesis: Path | str) -> str:
    return SCLITE_COMMAND.format(reference=reference, hypothesis=hypothesis)
