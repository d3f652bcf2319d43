"""``python -m trainable.run``: one LoRA run: train, score baseline and tuned, write reports.

Every flag is a TrialConfig field (generated from the dataclass, so the CLI cannot drift
from the recipe); the hand-run workflow's ``--manifest-path`` and ``LORA_TARGETS`` work too.
Only the standard library is imported until the run starts, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from trainable.config import TrialConfig, parse_eval_manifest
from trainable.config_io import ConfigError
from trainable.error_analysis import speakers_to_show
from trainable.preflight import check_inputs, check_run_output_dir
from trainable.trn import FOLDER as TRN_FOLDER, sclite_command

# Fields whose CLI form differs from "--field-name VALUE".
SPECIAL_FLAGS = {"eval_manifests", "allow_overlap", "target_modules", "train_manifest", "strict_text", "text_normalize"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainable.run",
        description="Train one LoRA adapter on a speech seq2seq model and score baseline vs tuned WER. "
        "With no arguments it runs on the bundled demo model and data.",
    )
    parser.add_argument("--config", help="start from a recipe file (JSON, a run's summary.json, a sweep's best.json, a YAML with a trial: section)")
    parser.add_argument(
        "--train-manifest", "--train-dataset", "--manifest-path", dest="train_manifest", metavar="SPEC",
        help="training data: a manifest (JSONL, JSON list or TSV/CSV) or a dataset: a save_to_disk folder[:split], "
        "parquet files (folder[:split] or glob), an audiofolder[:split], a Common Voice folder:split, a hub id:split; "
        "?text=COLUMN (audio, speaker, id, duration) names a column",
    )
    parser.add_argument(
        "--eval-manifest", "--eval-dataset", dest="eval_manifests", action="append", metavar="NAME=SPEC",
        help="held-out manifest or dataset to score baseline and tuned on; repeatable; the first is the primary one",
    )
    parser.add_argument("--strict-text", action="store_true", default=None,
                        help="stop if training transcripts hold characters the tokenizer maps to unknown (default: warn)")
    parser.add_argument("--text-normalize", action="store_true", default=None,
                        help="lower-case training labels and drop punctuation as the eval normaliser does, "
                        "for tokenizers without capitals or punctuation")
    parser.add_argument(
        "--target-modules", help="LoRA target modules: comma list or a set name (qv, qkv, qkvo, qkvo+fc, fc); "
        "default from $LORA_TARGETS, else fc1,fc2",
    )
    parser.add_argument("--allow-overlap", action="store_true", default=None, help="score eval sets even if they share audio with training")
    for f in fields(TrialConfig):
        if f.name in SPECIAL_FLAGS:
            continue
        default = f.default if f.default is not MISSING else None
        text = f.metadata.get("help", "")
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, default=None, metavar=f.name.upper(),
            help=text if "(default:" in text else f"{text} (default: {default})",
        )
    parser.add_argument("--log-level", default="INFO", help="logging level: DEBUG, INFO, WARNING or ERROR (default: INFO)")
    return parser


def config_from_args(args: argparse.Namespace, environ: dict | None = None) -> TrialConfig:
    """Defaults < --config file < $LORA_TARGETS < explicit flags."""
    environ = os.environ if environ is None else environ
    values = {}
    if args.config:
        values = TrialConfig.from_file(args.config).to_dict()
        values.pop("output_dir")  # never write over the run the recipe came from
    if environ.get("LORA_TARGETS"):
        values["target_modules"] = environ["LORA_TARGETS"]
    for f in fields(TrialConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    if args.eval_manifests:
        values["eval_manifests"] = tuple(parse_eval_manifest(item) for item in args.eval_manifests)
    return TrialConfig.from_dict(values)


def print_summary(summary: dict, output_dir: str, samples: int = 3) -> None:
    """What a person reads at the end: WER and CER per eval set, speed, and for the primary
    set the speakers, the commonest substitutions, the words fixed and broken, a few predictions."""
    print(f"\nRun finished in {summary['elapsed_seconds']:.1f} s on {summary['device']}: "
          f"{summary['steps']} steps at {summary['steps_per_second'] or 0:.2f} steps/s")
    # Relative change and WER points both: a canary going from 1.7 % to 3.4 % is "+108 %"
    # but under 2 points, and points are what a regression budget is written in.
    print(f"{'eval set':<14}{'utts':>6}{'baseline':>10}{'tuned':>10}{'change':>10}{'points':>9}"
          f"   CER baseline -> tuned   orthographic baseline -> tuned")
    for name, systems in summary["evals"].items():
        base, tuned = systems["baseline"], systems["tuned"]
        # From a baseline of 0 no relative change exists: "n/a" rather than "+nan%".
        change = f"{(tuned['wer'] - base['wer']) / base['wer']:+.1%}" if base["wer"] else "n/a"
        points = 100 * (tuned["wer"] - base["wer"]) + 0.0  # + 0.0: no "-0.00"
        print(f"{name:<14}{base['num_utterances']:>6}{base['wer']:>10.4f}{tuned['wer']:>10.4f}{change:>10}{points:>+9.2f}"
              f"   {base['cer']:.4f} -> {tuned['cer']:.4f}        {base['orthographic_wer']:.4f} -> {tuned['orthographic_wer']:.4f}")
    primary = summary["primary_eval"]
    baseline = json.loads((Path(output_dir) / f"{primary}_baseline.json").read_text())
    tuned = json.loads((Path(output_dir) / f"{primary}_tuned.json").read_text())
    print_error_analysis(primary, tuned)
    print_samples(primary, baseline["utterances"], tuned["utterances"], samples)
    print(f"\nAdapter, processor and reports: {output_dir}")
    trn = Path(output_dir) / TRN_FOLDER
    print(f"NIST trn files for sclite and sc_stats: {trn}/, e.g. "
          f"{sclite_command(trn / f'{primary}_reference.trn', trn / f'{primary}_tuned.trn')}")


def print_error_analysis(eval_set: str, tuned: dict, top: int = 5) -> None:
    """WER per speaker before and after, the commonest substitutions of the tuned model, and the
    words the adapter fixed and broke (all on normalised text)."""
    compared = tuned["compared_with_baseline"]
    shown = speakers_to_show(compared["speakers"])
    extra = len(compared["speakers"]) - len(shown)
    print(f"\nBy speaker on {eval_set}: WER baseline -> tuned (points)"
          + (f"; the {len(shown)} largest changes of {len(compared['speakers'])} speakers" if extra else ""))
    for row in shown:
        print(f"  {row['speaker'] or '(unknown)':<24}{row['utterances']:>5} utts  {row['baseline_wer']:.4f} -> {row['tuned_wer']:.4f}"
              f"  {100 * row['change']:+.2f}")
    pairs = ", ".join(f"{p['reference']} -> {p['hypothesis']} ({p['count']})" for p in tuned["confusion_pairs"][:top])
    print(f"Commonest substitutions when tuned (reference -> hypothesis): {pairs or 'none'}")
    for key, label in (("words_fixed", "Words the adapter fixed"), ("words_broken", "Words the adapter broke")):
        words = ", ".join(f"{w['word']} ({w['count']})" for w in compared[key][:top])
        print(f"{label}: {words or 'none'}")


def print_samples(eval_set: str, baseline: list[dict], tuned: list[dict], samples: int) -> None:
    changed = [i for i, (b, t) in enumerate(zip(baseline, tuned)) if b["hypothesis"] != t["hypothesis"]]
    print(f"\nSample predictions ({eval_set}; {len(changed)} of {len(tuned)} changed):")
    for i in (changed or list(range(len(tuned))))[:samples]:
        print(f"- {tuned[i]['id']}\n  reference: {tuned[i]['reference']!r}\n  baseline:  {baseline[i]['hypothesis']!r}"
              f"\n  tuned:     {tuned[i]['hypothesis']!r}")


def log_level(name: str) -> int:
    """``--log-level``: a level name of the logging module, in any case."""
    level = logging.getLevelName(name.strip().upper())
    if not isinstance(level, int):
        raise ConfigError(f"--log-level: {name!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # OpenMP threads that spin while waiting made a step 30x slower whenever another process
    # shared the cores (benchmarks.trial, row T); passive waiting costs ~nothing when idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:  # every flag, file and folder checked before torch loads
        level = log_level(args.log_level)
        config = config_from_args(args).resolved()
        check_inputs(config)
        check_run_output_dir(config.output_dir, where="--output-dir")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trainable.model import DeviceError
    from trainable.pipeline import train_and_evaluate

    try:
        summary = train_and_evaluate(config)
    except (ValueError, DeviceError, OSError) as error:  # bad manifest, leakage, target modules, model path
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_summary(summary, config.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
