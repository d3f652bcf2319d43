"""``python -m sweeps.repro``: rerun a config across seeds and decide whether its WER gain is real.

    python -m sweeps.repro --trials 5                 # best.json of the newest sweep under results/
    python -m sweeps.repro --sweep demo --trials 2 max_steps=50
    python -m sweeps.repro --config my_config.json --address auto --gpus-per-trial 0.5
    python -m sweeps.repro --from-scores results/demo/repro/scores.parquet --output-dir /tmp/again
    python -m sweeps.repro --config recipe.json --confirm-on test=data/test.jsonl --max-wer-increase canary=0.02

Each seed trains and scores baseline and tuned as one Ray task (``sweeps.repro.seeds``, in
parallel as resources allow, on this machine or a cluster); the per-utterance scores land in
``scores.parquet``, and the paired and two-level bootstraps of ``sweeps.repro.significance``
decide the verdict on the confirm set (``sweeps.repro.selection``: an eval set the sweep did not
select on, when one is named) and a non-inferiority decision on every budgeted eval set. One seed
is also rerun to check determinism, reported apart from the verdict. A seed whose folder already
holds a finished run of the same recipe is reused, not retrained (``sweeps.repro.reuse``), so an
interrupted repro, or one asked for more seeds, trains only what is missing; ``--retrain`` trains
every seed again.

``--help`` imports neither torch nor ray: they are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sweeps.repro import ReproError
from sweeps.repro.reuse import reuse_finished_runs, shown
from sweeps.repro.seeds import determinism_summary, rerun_checks, run_all_seeds, scores_table, seed_configs, write_scores
from sweeps.repro.selection import (
    EvalSet, RecipeFile, SweepChoice, check_budgets, check_sweep_finished, confirmation_config, default_seeds, parse_budget_flags,
    parse_confirm_flag, read_recipe_file, read_sweep_choice, selection_bias,
)
from sweeps.wording import counted
from trainable.config import TrialConfig
from trainable.config_io import ConfigError, parse_override, read_json, recipe_fields
from trainable.files import atomic_write_json, remove_abandoned_staging, removed_line
from trainable.preflight import check_writable_folder, missing_input, module_tree_to_check

RESULTS = Path("results")
SCORES_FILE = "scores.parquet"
EARLIER_RESULTS = "previous"  # where an earlier run's verdict goes when seeds run again (set_aside_earlier_results)
# Fields a repro run sets itself: overriding them on the command line would be silently lost.
DEFAULT_TRIALS = 5  # the fewest seeds the verdict trusts (MIN_SEEDS in significance.py)
SET_BY_REPRO = {"seed": "use --seeds", "output_dir": "use --output-dir", "num_threads": "use --cpus-per-trial"}
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
REQUIREMENTS = ("stable-gain", "within-budget", "recommended")
MIN_RESAMPLES = 100  # the fewest sweeps.repro.significance.analyse takes for a 95% interval


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweeps.repro",
        description="Rerun a LoRA config with several seeds (Ray tasks), score baseline and tuned per utterance, "
        "and decide with bootstrap statistics whether the WER gain is real: stable gain, regression, unstable "
        "or no significant change, plus an underpowered flag and a determinism check. Seed folders an earlier run "
        "finished with the same recipe are reused (--retrain trains them again); the earlier verdict, report and scores "
        "move to <output dir>/previous/ before any seed runs.",
        epilog="Exit status: 0 done; 1 a seed failed, or a --require is not met; "
        "2 bad input (config, overrides, scores table), 130 interrupted.",
    )
    source = parser.add_argument_group("what to rerun (default: best.json of the newest sweep under results/)")
    source.add_argument("--sweep", metavar="NAME", help="use results/NAME/best.json")
    source.add_argument("--config", metavar="FILE", help="a core config (JSON, a sweep's best.json, or YAML with a trial: section)")
    source.add_argument("overrides", nargs="*", metavar="key=value", help="config fields to change, e.g. max_steps=50 (trial.max_steps=50 works too)")
    source.add_argument("--confirm-on", metavar="NAME=PATH", help="score this eval set first, in place of the set the sweep selected on "
                        "(default: the confirm_on of best.json or of a sweep YAML; without one, repro tests the selection set and says the gain is biased upward)")
    seeds = parser.add_argument_group("seeds and determinism")
    seeds.add_argument("--trials", type=int, metavar="N", help=f"number of seeds (default {DEFAULT_TRIALS}, the fewest the verdict trusts)")
    seeds.add_argument("--seeds", metavar="S1,S2,...", help="explicit seeds (default: config seed + 1 ... + N, skipping the seeds the sweep selected with)")
    seeds.add_argument("--determinism-reruns", type=int, default=1, metavar="K", help="rerun the first K seeds once each and compare hypotheses (default 1; 0 = off)")
    seeds.add_argument("--retrain", action="store_true",
                       help="train every seed again (default: a seed_<n> folder that holds a finished run of the same recipe, "
                       "device and library versions is reused, so a repeated or interrupted repro trains only the missing seeds)")
    ray_group = parser.add_argument_group("Ray")
    ray_group.add_argument("--address", help="join a Ray cluster (e.g. auto); default: a fresh local instance")
    ray_group.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per seed run; torch threads follow it (default 1)")
    ray_group.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per seed run, fractional to share one GPU (default 0)")
    stats = parser.add_argument_group("statistics and output")
    stats.add_argument("--output-dir", metavar="DIR", help="default results/<sweep>/repro/ (--config FILE: results/repro-<stem>/)")
    stats.add_argument("--from-scores", metavar="PATH", help="recompute verdict and report from a stored scores.parquet: no model, no Ray")
    stats.add_argument("--eval-set", help="the eval set to test (default: the config's first; with --from-scores, the first in the file); others get plain WERs")
    stats.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    stats.add_argument("--min-effect", type=float, default=0.10, metavar="FRACTION", help="smallest gain worth detecting, relative to the baseline WER (default 0.10 = 10%%)")
    stats.add_argument("--min-effect-abs", type=float, metavar="WER", help="the same in absolute WER (0.005 = half a point); overrides --min-effect")
    stats.add_argument("--seed", type=int, default=0, help="bootstrap seed, so the report is reproducible (default 0)")
    stats.add_argument("--max-wer-increase", action="append", default=[], metavar="NAME=INCREASE",
                       help="budget on another eval set, e.g. canary=0.02 (2 WER points); repeatable; adds to or replaces best.json's")
    stats.add_argument("--require", type=parse_requirements, default=[], metavar="WHAT[,WHAT]",
                       help=f"exit 1 unless each holds: {', '.join(REQUIREMENTS)} (gate a CI pipeline on it)")
    return parser


def parse_requirements(text: str) -> list[str]:
    """``--require stable-gain,within-budget``."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in REQUIREMENTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one or more of {', '.join(REQUIREMENTS)}, comma-separated")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(argv)  # key=value may sit between options
    args.argv = argv
    try:
        check_args(args)
        if args.from_scores:
            record = from_scores(args)
            failed = False
        else:
            record, failed = rerun(args)
    except ReproError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("repro: interrupted, so no verdict: scores.parquet, verdict.json and report.md are written once every seed "
              "has finished. The finished seeds stay in their seed_* folders; the same command reuses them and trains the rest.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print(record["sentence"])
    print(f"Recommended: {record['recommendation']}")
    for warning in record.get("warnings", []):  # a canary that got worse must not hide in report.md
        print(f"Warning: {warning}")
    unmet = unmet_requirements(record, args.require)
    for line in unmet:
        print(line, file=sys.stderr)
    return EXIT_GATE_FAILED if failed or unmet else 0


def unmet_requirements(record: dict[str, Any], requirements: Sequence[str]) -> list[str]:
    """One line per ``--require`` the verdict does not meet."""
    unmet = []
    if "stable-gain" in requirements and record["verdict"] != "stable gain":
        unmet.append(f"--require stable-gain: the verdict is {record['verdict']!r}")
    if "within-budget" in requirements:
        if not record["budgets"]:
            unmet.append("--require within-budget: no eval set has a budget (best.json's max_wer_increase, or --max-wer-increase NAME=INCREASE)")
        unmet += [f"--require within-budget: {name} is {budget['decision']!r}"
                  for name, budget in record["budgets"].items() if budget["decision"] != "within budget"]
    if "recommended" in requirements and not record["recommended"]:
        unmet.append(f"--require recommended: {record['recommendation']}")  # the printed line's reasons, never others
    return unmet


def check_args(args: argparse.Namespace) -> None:
    """Every flag, checked before a recipe is read, a model loads or Ray starts; the
    message names the flag. (argparse has already refused what is no number at all.)"""
    _check_number("--cpus-per-trial", args.cpus_per_trial, above=0)
    _check_number("--gpus-per-trial", args.gpus_per_trial, at_least=0)
    if args.gpus_per_trial > 1 and not float(args.gpus_per_trial).is_integer():
        raise ReproError(f"--gpus-per-trial: a fraction of one GPU or a whole number of GPUs, got {args.gpus_per_trial:g}")
    if args.trials is not None:
        _check_number("--trials", args.trials, at_least=1)
    _check_number("--determinism-reruns", args.determinism_reruns, at_least=0)
    _check_number("--resamples", args.resamples, at_least=MIN_RESAMPLES)
    _check_number("--seed", args.seed, at_least=0)
    _check_number("--min-effect", args.min_effect, above=0, at_most=1)
    if args.min_effect_abs is not None:
        _check_number("--min-effect-abs", args.min_effect_abs, above=0, at_most=1)
    if args.seeds:
        count = len(parse_seeds(args.seeds))
        if args.trials is not None and args.trials != count:
            raise ReproError(f"--trials {args.trials} and --seeds {args.seeds} ({counted(count, 'seed')}) disagree: "
                             "--seeds sets the seeds; drop --trials")
    if args.from_scores and not Path(args.from_scores).is_file():
        aside = Path(args.from_scores).parent / EARLIER_RESULTS / SCORES_FILE
        hint = f" (the earlier run's scores, set aside when seeds ran again: {aside})" if aside.is_file() else ""
        raise ReproError(f"--from-scores {args.from_scores}: no such file{hint}")
    ignored = (("--config", args.config), ("--sweep", args.sweep), ("--seeds", args.seeds), ("--trials", args.trials),
               ("--retrain", args.retrain or None))
    if args.from_scores and (args.overrides or any(value is not None for _, value in ignored)):
        given = args.overrides[:1] or [flag for flag, value in ignored if value is not None]
        raise ReproError(f"--from-scores reads stored scores and trains nothing: {given[0]} would be ignored; drop it")
    if args.output_dir:
        try:
            check_writable_folder(args.output_dir, "--output-dir")
        except ConfigError as error:
            raise ReproError(str(error)) from None
    if not args.address and not args.from_scores:
        check_fits_here(args.cpus_per_trial, args.gpus_per_trial)


def _check_number(flag: str, value: float, above: float | None = None, at_least: float | None = None, at_most: float | None = None) -> None:
    if not math.isfinite(value):
        raise ReproError(f"{flag}: expected a finite number, got {value}")
    if above is not None and not value > above:
        raise ReproError(f"{flag}: must be > {above:g}, got {value:g}")
    if at_least is not None and value < at_least:
        raise ReproError(f"{flag}: must be >= {at_least:g}, got {value:g}")
    if at_most is not None and value > at_most:
        raise ReproError(f"{flag}: must be <= {at_most:g}, got {value:g}")


def check_fits_here(cpus: float, gpus: float) -> None:
    """A seed run asking for more than this machine has would wait forever in a local Ray."""
    from sweeps.ray_init import local_resources

    available = local_resources()
    for flag, resource, wanted in (("--cpus-per-trial", "CPU", cpus), ("--gpus-per-trial", "GPU", gpus)):
        if available and wanted > available.get(resource, 0.0):
            raise ReproError(
                f"{flag}: each seed run asks for {wanted:g} {resource} but this machine has {available.get(resource, 0.0):g}"
            )


# --------------------------------------------------------------------------- which config


def find_config_source(args: argparse.Namespace) -> tuple[Path, str, Path]:
    """(config file, run name, default output dir) from --config, --sweep or the newest sweep."""
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ReproError(f"--config {path}: no such file")
        if path.name == "best.json":  # a sweep's winner: keep the repro beside the sweep
            return path, path.parent.name, path.parent / "repro"
        return path, path.stem, RESULTS / f"repro-{path.stem}"
    if args.sweep:
        path = RESULTS / args.sweep / "best.json"
        if not path.is_file():
            raise ReproError(f"--sweep {args.sweep}: {path} does not exist (sweeps under {RESULTS}/: {_sweep_names() or 'none'})")
        return path, args.sweep, path.parent / "repro"
    candidates = sorted(RESULTS.glob("*/best.json"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ReproError(f"no sweep found ({RESULTS}/*/best.json): run `python -m sweeps.run` first, or pass --config FILE")
    return candidates[-1], candidates[-1].parent.name, candidates[-1].parent / "repro"


def _sweep_names() -> str:
    return ", ".join(sorted(p.parent.name for p in RESULTS.glob("*/best.json")))


def load_config(source: RecipeFile, overrides: Sequence[str]) -> TrialConfig:
    """The recipe of any recipe file (``trainable.config_io.recipe_fields``) with ``key=value``
    overrides on top (``trial.max_steps=50`` works too)."""
    path = source.path
    try:
        recipe = TrialConfig.from_dict(recipe_fields(source.data, path))
    except ConfigError as error:
        raise ReproError(str(error) if str(error).startswith(str(path)) else f"{path}: {error}") from None
    # A seed run reports to nobody: the sweep's mid-run evaluations (eval_every) would
    # only cost decoding time, so they are off unless an override asks for them.
    try:
        return TrialConfig.from_dict({**recipe.to_dict(), "eval_every": 0, **parse_overrides(overrides)})
    except ConfigError as error:
        raise ReproError(str(error) if str(error).startswith("override") else f"override {error}") from None


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Recipe fields from ``max_steps=50`` or ``trial.max_steps=50``; values read as YAML."""
    values = {}
    for text in overrides:
        keys, value = parse_override(text)
        keys = keys[1:] if keys[0] == "trial" and len(keys) > 1 else keys
        if len(keys) != 1:
            raise ReproError(f"override {text!r}: a recipe field takes no dotted key (e.g. max_steps=50)")
        if keys[0] in SET_BY_REPRO:
            raise ReproError(f"override {keys[0]}: set per seed by repro; {SET_BY_REPRO[keys[0]]}")
        values[keys[0]] = value
    return values


def choose_seeds(args: argparse.Namespace, config_seed: int, selection_seeds: Sequence[int] = ()) -> list[int]:
    """Explicit --seeds, else config seed + 1 ... + N skipping the sweep's selection seeds: the
    sweep picked this config partly because those seeds did well (winner's curse)."""
    if args.seeds:
        seeds = parse_seeds(args.seeds)
        reused = sorted(set(seeds) & set(selection_seeds))
        if reused:
            print(f"repro: --seeds reuses seed(s) {reused} the sweep selected this recipe with; their runs flatter it", file=sys.stderr)
    else:
        trials = DEFAULT_TRIALS if args.trials is None else args.trials
        if trials < 1:
            raise ReproError(f"--trials {trials}: need at least 1 seed ({DEFAULT_TRIALS} for a verdict that is not underpowered)")
        seeds = default_seeds(config_seed, trials, selection_seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ReproError(f"--seeds {args.seeds!r}: need distinct seeds")
    return seeds


def parse_seeds(text: str) -> list[int]:
    """``--seeds 7,1,9``: training seeds, each a whole number >= 0."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ReproError(f"--seeds {text!r}: expected integers separated by commas") from None
    if any(seed < 0 for seed in seeds):
        raise ReproError(f"--seeds {text!r}: seeds must be >= 0")
    return seeds


# --------------------------------------------------------------------------- the two modes


@dataclass(frozen=True)
class ReproRecord:
    """What a repro folder holds beside scores.parquet: run.json (what ran, where, how long),
    config.json (the recipe) and determinism.json (the reruns' comparison)."""

    run: dict[str, Any]
    config: dict[str, Any] | None
    reruns: list[dict[str, Any]]


def rerun(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """Train every seed through Ray, store scores.parquet, then analyse and report."""
    source, name, default_dir = find_config_source(args)
    source_file = read_recipe_file(source)  # read once: a sweep may rewrite its best.json meanwhile
    check_sweep_finished(source_file)  # an interrupted sweep's best.json is not its winner
    recipe = load_config(source_file, args.overrides)
    choice = read_sweep_choice(source_file, recipe)
    confirm = parse_confirm_flag(args.confirm_on) if args.confirm_on else choice.confirm_on
    config = confirmation_config(recipe, choice, confirm)
    tested = args.eval_set or config.primary_eval
    budgets = budgets_to_check(args, choice.budgets, [n for n, _ in config.eval_manifests], tested, source)
    seeds = choose_seeds(args, config.seed, choice.selection_seeds)
    repro_dir = Path(args.output_dir or default_dir).absolute()
    check_recipe_here(config, source, repro_dir, args)
    runs = seed_configs(config, seeds, max(0, args.determinism_reruns), repro_dir, args.cpus_per_trial)
    set_aside_earlier_results(repro_dir)
    remove_abandoned_seed_staging(repro_dir)
    finished, failed, wall = reuse_or_train(runs, args, device_here(config, args), name)
    table = scores_table(finished, [n for n, _ in config.eval_manifests])
    write_scores(table, repro_dir / SCORES_FILE)
    record = ReproRecord(
        run=run_record(args, source, name, config, choice, budgets) | seed_runs_record(finished, failed, wall),
        config=config.to_dict(), reruns=rerun_checks(finished),
    )
    atomic_write_json(repro_dir / "determinism.json", {"reruns": record.reruns})
    atomic_write_json(repro_dir / "config.json", config.replace(output_dir=str(repro_dir)).to_dict())
    atomic_write_json(repro_dir / "run.json", record.run)
    verdict = analyse_and_report(table, record, args, repro_dir, tested, str(repro_dir / SCORES_FILE))
    return verdict, bool(failed)


def reuse_or_train(
    runs: list[tuple[int, bool, TrialConfig]], args: argparse.Namespace, device: str | None, name: str,
) -> tuple[list[dict], list[dict], float]:
    """(finished seed runs, failed ones, wall seconds): the runs whose folders hold the same
    recipe are read back, the rest train through Ray; the wall time is that training's alone."""
    reused, to_train = reuse_finished_runs(runs, device, args.retrain)
    if not to_train:
        print(f"repro: {'the seed run' if len(runs) == 1 else f'all {len(runs)} seed runs'} reused; nothing to train", flush=True)
        return reused, [], 0.0
    started = time.time()
    trained, failed = run_all_seeds(to_train, args.address, args.cpus_per_trial, args.gpus_per_trial, job_name=f"repro {name}")
    return reused + trained, failed, time.time() - started


def device_here(config: TrialConfig, args: argparse.Namespace) -> str | None:
    """The device a local seed run uses (its tasks run on this machine); None with --address,
    where the node a seed lands on decides."""
    from trainable.model import select_device

    return None if args.address else select_device(config.device)


def set_aside_earlier_results(repro_dir: Path) -> None:
    """Move an earlier run's verdict, report, scores and side files into ``previous/`` before
    any seed runs: they describe that run's seeds, and a run interrupted now must not leave
    them beside seed folders they do not describe. (``--from-scores previous/scores.parquet``
    still reads them.)"""
    names = result_files()
    present = [repro_dir / name for name in names if (repro_dir / name).exists()]
    if not present:
        return
    aside = repro_dir / EARLIER_RESULTS
    foreign = sorted(p.name for p in aside.iterdir() if p.name not in names) if aside.is_dir() else []
    if foreign or (aside.exists() and not aside.is_dir()):
        raise ReproError(f"--output-dir: {aside} holds files repro did not write ({', '.join(foreign[:5]) or aside.name}); "
                         "move them, as repro keeps the earlier verdict there")
    if aside.is_dir():
        shutil.rmtree(aside)  # an older run's results, superseded by those moved in now
    aside.mkdir()
    for path in present:
        os.replace(path, aside / path.name)
    print(f"repro: moved the earlier verdict, report and scores to {shown(aside)}/: they describe that run's seeds; "
          "this run writes new ones once every seed has finished", flush=True)


def remove_abandoned_seed_staging(repro_dir: Path) -> None:
    """Remove the staging folders of seed runs killed while writing their outputs on this
    host (``trainable.files.remove_abandoned_staging``), saying so in one line: each may hold
    an adapter and reports, and nothing else ever removes them."""
    removed = remove_abandoned_staging(repro_dir)
    if removed:
        print(f"repro: {removed_line(removed, shown(repro_dir))}", flush=True)


def result_files() -> tuple[str, ...]:
    """What a finished repro writes beside its seed folders, the verdict first: moved in this
    order, an interrupted move never leaves a verdict beside the seed folders."""
    from sweeps.repro.report import BOOTSTRAP_PLOT, SEED_PLOT
    from trainable.trn import FOLDER as TRN_FOLDER

    return ("verdict.json", "report.md", SCORES_FILE, "run.json", "determinism.json", "config.json", SEED_PLOT, BOOTSTRAP_PLOT, TRN_FOLDER)


def check_recipe_here(config: TrialConfig, source: Path, repro_dir: Path, args: argparse.Namespace) -> None:
    """Before Ray starts: the recipe's files exist, --eval-set is one of its eval sets, the
    repro folder can be written, and a local run's device and rows are usable here (each
    seed would fail the same way otherwise)."""
    from trainable.model import DeviceError, select_device

    missing = missing_input(config.resolved())
    if missing:
        field, path = missing
        raise ReproError(f"{_set_by(field, args, source)}: {field}: {path} does not exist")
    names = [name for name, _ in config.eval_manifests]
    if args.eval_set and args.eval_set not in names:
        raise ReproError(f"--eval-set {args.eval_set}: the recipe's eval sets are {', '.join(names)}")
    try:
        check_writable_folder(repro_dir, "--output-dir")
    except ConfigError as error:
        raise ReproError(str(error)) from None
    if not args.address:
        try:
            select_device(config.device)
        except DeviceError as error:
            raise ReproError(f"{source}: device {config.device!r} is not available on this machine ({error}); "
                             "override it, e.g. device=cpu") from None
        check_rows_here(config.resolved())
    check_adapter_targets(config.resolved(), source)


def _set_by(field: str, args: argparse.Namespace, source: Path) -> str:
    """Where a recipe field's value came from, for messages: --confirm-on, an override, or the file."""
    if args.confirm_on and field == f"eval_manifests.{parse_confirm_flag(args.confirm_on).name}":
        return f"--confirm-on {args.confirm_on}"
    if field.split(".")[0] in parse_overrides(args.overrides):
        return "override"
    return str(source)


def check_rows_here(config: TrialConfig) -> None:
    """Bad rows would fail every seed the same way: list them before Ray starts, as a run
    does. Only for seeds run on this machine (a cluster's workers may hold audio it lacks),
    and not for a hub dataset, which the seeds download."""
    from trainable.data_report import check_rows, undecoded_views
    from trainable.manifest import ManifestError

    try:
        check_rows(undecoded_views(config, hub=False), config.on_bad_row, skip_hint="override on_bad_row=skip")
    except (ManifestError, OSError) as error:
        raise ReproError(str(error)) from None


def check_adapter_targets(config: TrialConfig, source: Path) -> None:
    """The (resolved) recipe's target modules exist in its model (in its adapter scope), checked on the
    module tree alone, so a typo fails here rather than in every seed. A hub model whose
    config cannot be read here is left to the seeds (a cluster's workers may reach the hub)."""
    from trainable.model import check_target_modules

    try:
        tree = module_tree_to_check(config.model, f"{source}: model", "seeds")
    except ConfigError as error:
        raise ReproError(str(error)) from None
    if tree is None:
        return
    try:
        check_target_modules(tree, config.target_modules, config.adapter_scope)
    except ValueError as error:
        raise ReproError(f"{source}: {error} (adapter_scope {config.adapter_scope!r}, model {config.model})") from None


def budgets_to_check(args: argparse.Namespace, stored: dict[str, float], eval_sets: Sequence[str], tested: str, source: Any) -> dict[str, float]:
    """The budgets a source carries (best.json's, or run.json's for --from-scores) with
    --max-wer-increase on top, each checked against the eval sets that are scored, before
    any seed trains."""
    check_budgets(stored, eval_sets, tested, f"{source}: max_wer_increase")
    flags = parse_budget_flags(args.max_wer_increase)
    check_budgets(flags, eval_sets, tested, "--max-wer-increase")
    return {**stored, **flags}


def run_record(
    args: argparse.Namespace, source: Path, name: str, config: TrialConfig, choice: SweepChoice, budgets: dict[str, float],
) -> dict[str, Any]:
    """run.json's what: the command, the recipe's source and model, the eval sets the seeds
    scored (absolute paths), the set the sweep selected on, its selection seeds and the budgets."""
    paths = dict(config.resolved().eval_manifests)
    return {
        "name": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "python -m sweeps.repro " + " ".join(shlex.quote(a) for a in args.argv),
        "source": str(source),
        "model": config.model,
        "eval_manifests": [[eval_set, path] for eval_set, path in paths.items()],
        "selected_on": choice.selected_on.to_dict() if choice.selected_on else None,
        "selection_seeds": list(choice.selection_seeds),
        "max_wer_increase": budgets,
    }


def seed_runs_record(finished: list[dict], failed: list[dict], wall: float) -> dict[str, Any]:
    """run.json's where and how long: devices, the wall time of the seed runs trained now, each
    seed run (``reused``: read back from an earlier run's folder) and each failure."""
    keys = ("seed", "rerun", "elapsed_seconds", "steps", "device", "threads", "node", "output_dir", "baseline_decoded_by")
    return {
        "device": ", ".join(sorted({str(run.get("device")) for run in finished})),
        "wall_seconds": wall,  # the seed runs trained now; a reused one's elapsed_seconds is from its own run
        "seed_runs": [{key: run.get(key) for key in keys} | {"reused": bool(run.get("reused"))} for run in finished],
        "failed": failed,
    }


def from_scores(args: argparse.Namespace) -> dict[str, Any]:
    """Statistics and report from a stored table alone; config.json, run.json and determinism.json
    beside it are used when present (a repro directory has them)."""
    from sweeps.repro.significance import ScoresError, eval_sets_in_order, read_scores

    if args.confirm_on:
        raise ReproError("--confirm-on chooses what the seed runs score; with --from-scores, pick a stored eval set with --eval-set")
    path = Path(args.from_scores)
    try:
        table = read_scores(str(path))
    except ScoresError as error:
        raise ReproError(str(error)) from None
    beside = path.parent
    eval_sets = eval_sets_in_order(table)
    tested = args.eval_set or eval_sets[0]
    run = _read_json(beside / "run.json") or {"name": beside.name}
    budgets = budgets_to_check(args, run.get("max_wer_increase") or {}, eval_sets, tested, beside / "run.json")
    record = ReproRecord(
        run={**run, "max_wer_increase": budgets},
        config=_read_json(beside / "config.json") or None,
        reruns=_read_json(beside / "determinism.json").get("reruns", []),
    )
    output_dir = Path(args.output_dir) if args.output_dir else beside
    return analyse_and_report(table, record, args, output_dir, tested, str(path))


def _read_json(path: Path) -> dict[str, Any]:
    """A side file of a repro folder, or {} when it is absent or unreadable."""
    try:
        data = read_json(path) if path.is_file() else {}
    except ConfigError:
        return {}
    return data if isinstance(data, dict) else {}


def analyse_and_report(
    table: Any, record: ReproRecord, args: argparse.Namespace, output_dir: Path, primary: str, source: str,
) -> dict[str, Any]:
    """The gain's statistics on the tested eval set (``primary``), a non-inferiority decision on
    each budgeted one (run.json's ``max_wer_increase``, checked by the caller), plain WERs on the
    rest, and every output file."""
    from sweeps.repro import significance
    from sweeps.repro.report import write_outputs

    limits = record.run.get("max_wer_increase") or {}
    try:
        analysis = significance.analyse(
            significance.paired_scores(table, primary),
            resamples=args.resamples, seed=args.seed, min_effect=args.min_effect_abs, min_effect_relative=args.min_effect,
        )
        budgets = [significance.assess_budget(significance.paired_scores(table, name), limit, args.resamples, args.seed)
                   for name, limit in limits.items()]
    except (significance.ScoresError, ValueError) as error:
        raise ReproError(f"{source}: {error}") from None
    determinism = determinism_summary(significance.baselines_identical(table, cached_baseline_seeds(record.run)), record.reruns)
    verdict = write_outputs(output_dir, analysis, table, determinism, record.run, record.config, budgets, selection_record(record.run, primary))
    print(f"repro: wrote {output_dir}/verdict.json, report.md, plots and trn/; deterministic: {determinism['deterministic']}")
    return verdict


def cached_baseline_seeds(run: dict[str, Any]) -> set[int]:
    """Seeds whose baseline hypotheses some eval set read from the decode cache, not decoded
    itself (run.json's seed runs; a run.json from before this was recorded names none)."""
    return {entry["seed"] for entry in run.get("seed_runs") or []
            if not entry.get("rerun") and "decode cache" in (entry.get("baseline_decoded_by") or {}).values()}


def selection_record(run: dict[str, Any], tested: str) -> dict[str, Any]:
    """verdict.json's selection_bias, selected_on and confirmed_on, from what run.json says the
    seeds scored and the sweep selected on (a run.json without them: not known)."""
    paths = dict(run.get("eval_manifests") or [])
    selected = run.get("selected_on")
    confirmed = EvalSet(tested, paths.get(tested))
    return {
        "selection_bias": selection_bias(confirmed, EvalSet(selected["name"], selected.get("path")) if selected else None),
        "selected_on": selected,
        "confirmed_on": confirmed.to_dict(),
    }


if __name__ == "__main__":
    sys.exit(main())
