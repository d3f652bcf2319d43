"""What the errors are, pooled over seeds: WER per speaker, the commonest substitutions, the words
the adapter fixed and broke (``trainable.error_analysis`` on a scores table), and NIST trn files
of every seed for ``sclite`` and ``sc_stats``.

Counts are sums over the seeds' tuned runs, so a word fixed on every one of 5 seeds counts 5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeps.wording import counted
from trainable.error_analysis import confusion_pairs, speaker_changes, speakers_to_show, words_fixed_and_broken
from trainable.trn import FOLDER as TRN_FOLDER, sclite_command, write_trn

TOP = 10


def _rows(table: Any, eval_set: str, system: str) -> list[dict[str, Any]]:
    """One eval set's rows of one system, every seed, keyed as a WER report's utterances are."""
    rows = table[(table["eval_set"] == eval_set) & (table["system"] == system)]
    return rows.rename(columns={"utterance_id": "id"}).to_dict("records")


def pooled_error_analysis(table: Any, eval_set: str) -> dict[str, Any]:
    """Speakers before and after, substitutions of each system and words fixed and broken,
    over every seed of ``eval_set``."""
    baseline, tuned = _rows(table, eval_set, "baseline"), _rows(table, eval_set, "tuned")
    tuned_by_key = {(row["seed"], row["id"]): row for row in tuned}
    triples = ((row["reference"], row["hypothesis"], tuned_by_key[(row["seed"], row["id"])]["hypothesis"]) for row in baseline)
    return {
        "eval_set": eval_set,
        "seeds": len({row["seed"] for row in tuned}),
        "speakers": speaker_changes(baseline, tuned),
        "confusion_pairs": {system: confusion_pairs(((r["reference"], r["hypothesis"]) for r in rows), TOP)
                            for system, rows in (("baseline", baseline), ("tuned", tuned))},
        **words_fixed_and_broken(triples, TOP),
    }


def render_error_analysis(analysis: dict[str, Any]) -> str:
    """report.md's error analysis: a speaker table, substitutions side by side, words fixed and broken."""
    n = analysis["seeds"]
    over = f"summed over {counted(n, 'seed')}"
    lines = [f"## Error analysis ({analysis['eval_set']}, {counted(n, 'seed')} pooled)", "",
             "On Whisper-normalised text, aligned as the WER is.", ""]
    lines += _speaker_table(analysis["speakers"])
    lines += ["", f"Commonest substitutions, reference -> hypothesis (counts {over}):", "",
              "| rank | baseline | tuned |", "|---:|---|---|"]
    baseline, tuned = analysis["confusion_pairs"]["baseline"], analysis["confusion_pairs"]["tuned"]
    for rank in range(max(len(baseline), len(tuned))):
        lines.append(f"| {rank + 1} | {_pair(baseline, rank)} | {_pair(tuned, rank)} |")
    lines.append("")
    for key, label in (("words_fixed", "Words the adapter fixed (wrong in the baseline, right when tuned"),
                       ("words_broken", "Words the adapter broke (right in the baseline, wrong when tuned")):
        words = ", ".join(f"{w['word']} ({w['count']})" for w in analysis[key])
        lines.append(f"- {label}; {over}): {words or 'none'}")
    return "\n".join(lines)


def _pair(pairs: list[dict[str, Any]], rank: int) -> str:
    return f"{pairs[rank]['reference']} -> {pairs[rank]['hypothesis']} ({pairs[rank]['count']})" if rank < len(pairs) else ""


def _speaker_table(speakers: list[dict[str, Any]]) -> list[str]:
    shown = speakers_to_show(speakers)
    lines = ["| speaker | utterances | reference words | baseline WER | tuned WER | change (points) |", "|---|---:|---:|---:|---:|---:|"]
    for row in shown:
        lines.append(f"| {row['speaker'] or '(unknown)'} | {row['utterances']} | {row['ref_words']} | {100 * row['baseline_wer']:.2f}% | "
                     f"{100 * row['tuned_wer']:.2f}% | {100 * row['change']:+.2f} |")
    if len(shown) < len(speakers):
        lines.append(f"\nThe {len(shown)} largest changes of {len(speakers)} speakers; verdict.json lists every speaker.")
    return lines


def write_trn_files(directory: Path, table: Any) -> list[Path]:
    """``trn/<eval set>_reference.trn`` and ``trn/<eval set>_seed<seed>_<system>.trn`` for every
    eval set, seed and system."""
    folder = Path(directory) / TRN_FOLDER
    paths = []
    for eval_set in dict.fromkeys(table["eval_set"]):
        by_system = {system: _rows(table, eval_set, system) for system in ("baseline", "tuned")}
        first_seed = min(row["seed"] for row in by_system["baseline"])
        paths.append(write_trn(folder / f"{eval_set}_reference.trn", [r for r in by_system["baseline"] if r["seed"] == first_seed], "reference"))
        for seed in sorted({row["seed"] for row in by_system["tuned"]}):
            for system, rows in by_system.items():
                paths.append(write_trn(folder / f"{eval_set}_seed{seed}_{system}.trn", [r for r in rows if r["seed"] == seed], "hypothesis"))
    return paths


def sclite_hint(eval_set: str, seed: int) -> str:
    """The command that scores one seed's tuned hypotheses, run in the repro folder."""
    return sclite_command(f"{TRN_FOLDER}/{eval_set}_reference.trn", f"{TRN_FOLDER}/{eval_set}_seed{seed}_tuned.trn")
