"""``python -m sweeps.run``: search LoRA recipes with Ray Tune + Optuna, scored by held-out WER.

With no arguments it sweeps the bundled demo on CPU (sweeps/configs/demo.yaml). Results go
to results/<sweep>/ (trials.parquet, best.json, summary.md); Ray's trial state to
results/<sweep>/ray/ unless --storage says otherwise.

torch, transformers, peft and Ray load inside ``main`` only, so ``--help`` and a bad
config key answer at once.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from sweeps.cluster import StorageError, check_storage
from sweeps.data_report import report_sweep_data
from sweeps.ray_init import check_local_options
from sweeps.search.config import SweepConfig, load_sweep_config
from sweeps.search.experiment import (RESULTS_ROOT, SweepPaths, TrialConcurrency, check_experiment, check_inputs_exist, one_go_timing,
                                      saved_storage)
from trainable.config import REPO_ROOT
from trainable.config_io import ConfigError, parse_override, read_json, read_yaml
from trainable.preflight import check_writable_folder

DEFAULT_CONFIG = REPO_ROOT / "sweeps" / "configs" / "demo.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweeps.run",
        description="Search LoRA recipes with Ray Tune + Optuna, scored by held-out WER.",
        epilog="examples:\n  python -m sweeps.run\n"
        "  python -m sweeps.run --config sweeps/configs/moonshine_tiny.yaml trial.train_manifest=train.jsonl \\\n"
        "      trial.eval_manifests.dev=dev.jsonl 'confirm_on={test: test.jsonl}' num_samples=32 trial.max_steps=800\n"
        "  python -m sweeps.run --resume            # continue the interrupted demo sweep\n"
        "  python -m sweeps.run --analyze demo      # rebuild results/demo/ from Ray's saved state\n"
        "  python -m sweeps.run --analyze demo max_wer_increase.canary=0.01   # choose the winner under another canary budget",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override YAML keys, dotted: num_samples=32 trial.max_steps=800 search.learning_rate.high=1e-2 scheduler=none")
    parser.add_argument("--config", help=f"sweep YAML (default: {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    parser.add_argument("--name", help="sweep name (default: the YAML's name); results go to results/NAME/")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this name: finished trials are kept, unfinished ones continue from their last checkpoint")
    parser.add_argument("--analyze", metavar="NAME", help="only rebuild results/NAME/ (trials.parquet, best.json, summary.md) from Ray's saved state")
    parser.add_argument("--address", help="join a running Ray cluster ('auto', or HOST:PORT); default: start a local Ray")
    parser.add_argument("--storage", help="where Ray keeps trial state and checkpoints: a path or URI (s3://, gs://); must be shared by all nodes of a cluster (default: results/NAME/ray)")
    parser.add_argument("--shared-storage", action="store_true", help="--storage is a path mounted at the same place on every node (NFS/EFS) that could not be recognised as such")
    parser.add_argument("--dashboard-host", default="127.0.0.1", help="interface for the Ray dashboard of a local Ray (default 127.0.0.1; 0.0.0.0 lets anyone who reaches this machine run code)")
    parser.add_argument("--dashboard-port", type=int, help="port of the Ray dashboard of a local Ray (default 8265, or the next free one)")
    parser.add_argument("--num-cpus", type=int, help="CPUs a local Ray may use (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_intermixed_args(argv)  # key=value may sit between options
    args.command = rerun_command(argv)
    try:
        if args.analyze:
            return analyze(args.analyze, args.overrides)
        sweep = resolve_sweep(args)
        if not args.address:
            check_local_options(args.dashboard_host, args.dashboard_port, args.num_cpus)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paths = SweepPaths.for_sweep(sweep.name, args.storage or saved_storage(sweep.name, args.resume))
    try:
        check_writable_folder(paths.results_dir, "results folder")
        if "://" not in paths.storage_path:
            check_writable_folder(paths.storage_path, "--storage")
        check_inputs_exist(sweep)
        resume = check_experiment(sweep, paths, args.resume)
        check_before_ray(sweep, args)
        report_sweep_data(sweep.trial.resolved(), paths.results_dir, check_rows_here=not args.address)
        return run_sweep(sweep, paths, args, resume)
    except (ConfigError, StorageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def rerun_command(argv: list[str]) -> str:
    """This invocation as the user types it again, for run.json: sys.argv[0] is run.py's
    path, which ``python -m`` does not take."""
    return " ".join(["python -m sweeps.run", *map(shlex.quote, argv)])


def check_before_ray(sweep: SweepConfig, args: argparse.Namespace) -> None:
    """What would fail every trial, found before Ray starts: for a local sweep, trial
    resources or a device this machine does not have; then target modules the model lacks."""
    from sweeps.ray_init import local_resources
    from sweeps.search.experiment import check_device_here, check_local_resources, check_target_modules_exist

    if not args.address:  # on a cluster, its nodes run the trials, not this machine
        available = local_resources(args.num_cpus)
        if available:
            check_local_resources(sweep, available)
        check_device_here(sweep)
    check_target_modules_exist(sweep)


def resolve_sweep(args: argparse.Namespace) -> SweepConfig:
    """The YAML plus overrides; on --resume, the sweep as it was first run (Tune needs the
    same search space), refusing changes rather than silently ignoring them."""
    config_path = args.config or DEFAULT_CONFIG
    sweep = load_sweep_config(config_path, [*args.overrides, *([f"name={args.name}"] if args.name else [])])
    if not args.resume:
        return sweep
    saved_path = (RESULTS_ROOT / sweep.name / "sweep.yaml").absolute()
    if not saved_path.is_file():
        return sweep
    saved = SweepConfig.from_dict(read_yaml(saved_path))
    if args.config is None and not args.overrides:
        return saved
    if args.config is None:  # overrides alone change the sweep as first run, not the default YAML
        sweep = load_sweep_config(saved_path, args.overrides)
    changed = _changed_keys(saved.to_dict(), sweep.to_dict())
    if changed:
        raise ConfigError(
            f"--resume: {', '.join(changed)} differ from the sweep as first run ({saved_path}); "
            "a resumed sweep must keep its search space. Drop the changes, or start a new sweep with --name"
        )
    return saved


def run_sweep(sweep: SweepConfig, paths: SweepPaths, args: argparse.Namespace, resume: bool) -> int:
    """Start (or join) Ray, run or resume the Tune experiment, write and print the results."""
    # Forced snapshots of the sweep state (one per num_to_keep checkpoints) are what make
    # --resume lose little; Tune warns about them as if they were a mistake.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    from sweeps.ray_init import start_ray
    from sweeps.search.experiment import build_tuner, check_local_resources, record_wall_time, restore_tuner, save_sweep, trial_concurrency
    from sweeps.search.monitoring import tune_console

    started_ray = start_ray(args.address, args.dashboard_host, args.dashboard_port, args.num_cpus, job_name=f"sweep {sweep.name}")
    try:
        if started_ray and not args.address:
            check_local_resources(sweep, ray.cluster_resources())
        check_storage(paths.storage_path, ray.nodes(), shared=args.shared_storage, expect_more_nodes=bool(args.address))
        concurrency = trial_concurrency(sweep, ray.nodes())
        save_sweep(sweep, paths, resumed=resume, concurrency=concurrency, continued=args.resume, command=args.command)
        started = time.monotonic()
        tuner = restore_tuner(sweep, paths) if resume else build_tuner(sweep, paths)
        with tune_console():
            tuner.fit()  # the results are read back from Ray's saved state, as --analyze does
            search_trials = race_if_searched(sweep, paths)
        wall_seconds = time.monotonic() - started  # search and race: the summary's trial time counts both
        print(f"Sweep wall time: {wall_seconds:.0f} s" + (" (this resumed part)" if resume else ""))
        record_wall_time(paths.results_dir, wall_seconds)  # --analyze writes the summary again, timing included
        # A resumed sweep's trial time spans several runs, so no overhead ratio for it.
        return report_results(sweep, paths, None if resume else wall_seconds, search_trials, concurrency=concurrency)
    finally:
        if started_ray:
            ray.shutdown()


def race_if_searched(sweep: SweepConfig, paths: SweepPaths) -> Any:
    """Race the finalists once every search trial has ended (not after an interrupted search).
    Returns the search's trials table it read (None without racing): the search has ended and
    the race is a separate experiment, so the results can reuse it."""
    if not sweep.racing.enabled:
        return None
    from sweeps.search.experiment import run_racing
    from sweeps.search.results import trials_table
    from sweeps.search.trial import COMPLETED, ERROR, STOPPED_EARLY

    trials = trials_table(paths.experiment_path, sweep)
    if len(trials) < sweep.num_samples or not trials["status"].isin([COMPLETED, STOPPED_EARLY, ERROR]).all():
        return trials
    run_racing(sweep, paths, trials)
    return trials


def report_results(sweep: SweepConfig, paths: SweepPaths, wall_seconds: float | None, search_trials: Any = None,
                   sweep_as_run: SweepConfig | None = None, concurrency: TrialConcurrency | None = None) -> int:
    """Write and print the results; ``search_trials``: the search's trials table if already
    read since the search ended (else it is read from Ray's saved state); ``concurrency``:
    how many trials could run at once (``TrialConcurrency``), for the overhead ratio. Exit
    status 0 for a finished sweep with a winner, 1 for none or for an unfinished sweep."""
    from sweeps.search.results import write_results
    from sweeps.search.summary import describe_best

    results = write_results(paths.experiment_path, paths.results_dir, sweep, wall_seconds, trials=search_trials,
                            sweep_as_run=sweep_as_run, concurrency=concurrency)
    print()
    print(describe_best(results, sweep))
    # No winner, no best.json (write_results removes a stale one): the line names what is there.
    written = [name for name in ("trials.parquet", "best.json", "summary.md") if (Path(paths.results_dir) / name).is_file()]
    print(f"Results: {paths.results_dir}/ ({', '.join(written)})")
    # An unfinished sweep (search or race) has no answer yet: describe_best said so first
    # thing, with the --resume command, and best.json says "complete": false.
    return 0 if results.best is not None and not results.unfinished else 1


def analyze(name: str, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Rebuild the result files of an earlier sweep from its saved sweep.yaml and Ray state.
    ``max_wer_increase.*`` overrides choose the winner under another budget without
    training anything again; other keys describe the trials already run and cannot change."""
    results_dir = (RESULTS_ROOT / name).absolute()
    sweep_file, run_file = results_dir / "sweep.yaml", results_dir / "run.json"
    if not sweep_file.is_file() or not run_file.is_file():
        raise ConfigError(f"--analyze {name}: no sweep.yaml/run.json in {results_dir}; was a sweep of that name run here?")
    for override in overrides:
        keys, _ = parse_override(override)
        if keys[0] != "max_wer_increase":
            raise ConfigError(f"--analyze {name}: {'.'.join(keys)} describes trials already run; only max_wer_increase.* can change")
    sweep = load_sweep_config(sweep_file, overrides)
    run = read_json(run_file)
    paths = SweepPaths(results_dir=results_dir, storage_path=run["storage_path"], experiment_path=run["experiment_path"])
    check_analyzable(name, paths.experiment_path)
    # The race raced the finalists of the sweep's own budgets: under others, a new finalist was not raced.
    as_run = load_sweep_config(sweep_file) if overrides else None
    wall_seconds, concurrency = one_go_timing(run)
    return report_results(sweep, paths, wall_seconds=wall_seconds, sweep_as_run=as_run, concurrency=concurrency)


def check_analyzable(name: str, experiment_path: str) -> None:
    """Ray's saved experiment state is what --analyze reads: without it, say why and what to
    do, rather than fail inside Ray's ExperimentAnalysis. A sweep stopped before Ray's first
    save has no trial results yet; a folder moved or deleted since has none here."""
    from ray.tune import Tuner

    from sweeps.search.experiment import has_saved_state

    if has_saved_state(experiment_path):
        return
    if Tuner.can_restore(experiment_path):
        raise ConfigError(
            f"--analyze {name}: the sweep stopped before Ray saved its first experiment state ({experiment_path} "
            f"has no experiment_state-*.json), so no trial has results yet; continue it with: python -m sweeps.run --resume --name {name}"
        )
    raise ConfigError(
        f"--analyze {name}: no Ray experiment at {experiment_path} (run.json's experiment_path), where the sweep's "
        "trials are kept; was it moved or deleted? Put it back there, or run the sweep again"
    )


def _changed_keys(saved: dict, current: dict, prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


if __name__ == "__main__":
    sys.exit(main())
