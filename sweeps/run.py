"""``python -m sweeps.run``: search LoRA recipes with Ray Tune + Optuna, scored by held-out WER.

With no arguments it sweeps the bundled demo on CPU (sweeps/configs/demo.yaml). Results go
to results/<sweep>/ (trials.parquet, best.json, summary.md); Ray's trial state to
results/<sweep>/ray/ unless --storage says otherwise.

torch, transformers, peft and Ray load inside ``main`` only, so ``--help`` and a bad
config key answer at once.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sweeps.cluster import StorageError, check_storage
from sweeps.sweep_config import SweepConfig, SweepConfigError, load_sweep_config, parse_override, read_yaml
from trainable.config import DEMO_MODEL, REPO_ROOT, atomic_write_text

DEFAULT_CONFIG = REPO_ROOT / "sweeps" / "configs" / "demo.yaml"
RESULTS_ROOT = Path("results")
DEFAULT_DASHBOARD_PORT = 8265


@dataclass(frozen=True)
class SweepPaths:
    """Where one sweep keeps its results (always local) and Ray's state (maybe remote)."""

    results_dir: Path
    storage_path: str
    experiment_path: str

    @classmethod
    def for_sweep(cls, name: str, storage: str | None, results_root: Path = RESULTS_ROOT) -> "SweepPaths":
        results_dir = (results_root / name).absolute()
        storage_path = storage if storage and "://" in storage else str(Path(storage or results_dir / "ray").absolute())
        return cls(results_dir=results_dir, storage_path=storage_path, experiment_path=f"{storage_path.rstrip('/')}/{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweeps.run",
        description="Search LoRA recipes with Ray Tune + Optuna, scored by held-out WER.",
        epilog="examples:\n  python -m sweeps.run\n"
        "  python -m sweeps.run --config sweeps/configs/moonshine_tiny.yaml num_samples=32 trial.max_steps=800\n"
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
    args = build_parser().parse_args(argv)
    try:
        if args.analyze:
            return analyze(args.analyze, args.overrides)
        sweep = resolve_sweep(args)
    except SweepConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paths = SweepPaths.for_sweep(sweep.name, args.storage or _saved_storage(sweep.name, args.resume))
    try:
        check_inputs_exist(sweep)
        resume = check_experiment(sweep, paths, args.resume)
        return run_sweep(sweep, paths, args, resume)
    except (SweepConfigError, StorageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


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
    changed = _changed_keys(saved.to_dict(), sweep.to_dict())
    if changed:
        raise SweepConfigError(
            f"--resume: {', '.join(changed)} differ from the sweep as first run ({saved_path}); "
            "a resumed sweep must keep its search space. Drop the changes, or start a new sweep with --name"
        )
    return saved


def check_experiment(sweep: SweepConfig, paths: SweepPaths, resume: bool) -> bool:
    """Whether to restore: never start over an existing sweep by accident (its trials would
    mix with the new ones), and say so when --resume finds nothing."""
    from ray.tune import Tuner

    exists = Tuner.can_restore(paths.experiment_path)
    if exists and not resume:
        raise SweepConfigError(
            f"sweep {sweep.name!r} already exists at {paths.experiment_path}; add --resume to continue it, "
            f"--name {sweep.name}-2 for a new one, or delete {paths.results_dir} to start over"
        )
    if resume and not exists:
        print(f"note: nothing to resume at {paths.experiment_path}; starting sweep {sweep.name!r}")
    return exists


def run_sweep(sweep: SweepConfig, paths: SweepPaths, args: argparse.Namespace, resume: bool) -> int:
    """Start (or join) Ray, run or resume the Tune experiment, write and print the results."""
    # Forced snapshots of the sweep state (one per num_to_keep checkpoints) are what make
    # --resume lose little; Tune warns about them as if they were a mistake.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    started_ray = start_ray(args)
    try:
        if started_ray and not args.address:
            check_local_resources(sweep, ray.cluster_resources())
        check_storage(paths.storage_path, ray.nodes(), shared=args.shared_storage, expect_more_nodes=bool(args.address))
        _save_sweep(sweep, paths, resumed=resume)
        started = time.monotonic()
        tuner = restore_tuner(sweep, paths) if resume else build_tuner(sweep, paths)
        tuner.fit()  # the results are read back from Ray's saved state, as --analyze does
        wall_seconds = time.monotonic() - started
        print(f"Sweep wall time: {wall_seconds:.0f} s" + (" (this resumed part)" if resume else ""))
        # A resumed sweep's trial time spans both runs, so no overhead ratio for it.
        return report_results(sweep, paths, None if resume else wall_seconds)
    finally:
        if started_ray:
            ray.shutdown()


def start_ray(args: argparse.Namespace) -> bool:
    """Start a local Ray with its dashboard on 127.0.0.1 (or join --address); print where the
    dashboard is and where its login token lives. Returns whether we started Ray."""
    import ray

    if ray.is_initialized():  # e.g. a test or notebook that started Ray itself
        return False
    if args.address:
        context = ray.init(address=args.address)
        _print_dashboard(context.dashboard_url, remote=True)
        return True
    _warn_if_exposed(args.dashboard_host)
    port = args.dashboard_port or free_dashboard_port(args.dashboard_host)
    try:
        context = ray.init(
            address="local", num_cpus=args.num_cpus, include_dashboard=True,
            dashboard_host=args.dashboard_host, dashboard_port=port,
        )
    except ValueError as error:
        if "already occupied" in str(error):
            raise SweepConfigError(f"--dashboard-port: {args.dashboard_host}:{port} is in use; pick another port") from None
        raise
    _print_dashboard(context.dashboard_url, remote=False)
    return True


def check_inputs_exist(sweep: SweepConfig) -> None:
    """Missing manifests or model would fail every trial the same way: say so before Ray starts.
    (A hub id such as UsefulSensors/moonshine-tiny is no local path and is not checked.)"""
    from sweeps.search_space import with_absolute_paths

    trial = sweep.trial.resolved()
    paths = [("trial.train_manifest", trial.train_manifest)]
    paths += [(f"trial.eval_manifests.{name}", path) for name, path in trial.eval_manifests]
    if _looks_like_local_path(sweep.trial.model):
        paths.append(("trial.model", trial.model))
    for param in with_absolute_paths(sweep).search:
        if param.name == "train_manifest":
            paths += [("search.train_manifest.choices", choice) for choice in param.choices]
    for key, path in paths:
        if "://" not in path and not Path(path).exists():
            hint = " (build the bundled demo model with: python -m demo.pretrain --corpus data/demo/source --out data/demo/model)" if sweep.trial.model == DEMO_MODEL else ""
            raise SweepConfigError(f"{key}: {path} does not exist{hint}")


def _looks_like_local_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") != 1 or Path(model).exists()


def check_local_resources(sweep: SweepConfig, available: dict[str, float]) -> None:
    """A trial asking for more than this machine has would wait forever: say so instead.
    (Not on a cluster, where an autoscaler may still add the node that fits.)"""
    wanted = sweep.resources_per_trial
    for key, resource in (("gpu", "GPU"), ("cpu", "CPU")):
        have, need = available.get(resource, 0.0), getattr(wanted, key)
        if need > have:
            raise SweepConfigError(
                f"resources_per_trial.{key}: each trial asks for {need:g} {resource} but this machine has {have:g}; "
                f"override it, e.g. resources_per_trial.{key}={have:g}" + (" trial.device=cpu" if key == "gpu" else "")
            )


def free_dashboard_port(host: str, first: int = DEFAULT_DASHBOARD_PORT, tries: int = 50) -> int:
    """8265, or the next free port: a second sweep on the same machine gets its own dashboard."""
    import socket

    for port in range(first, first + tries):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
                return port
            except OSError:
                continue
    return first


def build_tuner(sweep: SweepConfig, paths: SweepPaths):
    """A new Tune experiment: Optuna proposes, ASHA stops poor trials, each trial checkpoints."""
    from ray import tune

    from sweeps.search_space import build_search_space, build_searcher, with_absolute_paths

    searched = with_absolute_paths(sweep)
    space = build_search_space(searched, sweep.trial.resolved())
    tune_config = tune.TuneConfig(
        metric=sweep.metric,
        mode=sweep.mode,
        search_alg=build_searcher(searched, space),
        scheduler=build_scheduler(sweep),
        num_samples=sweep.num_samples,
        max_concurrent_trials=sweep.max_concurrent_trials,
        trial_dirname_creator=trial_dirname,
    )
    return tune.Tuner(trial_trainable(sweep), tune_config=tune_config, run_config=build_run_config(sweep, paths))


def restore_tuner(sweep: SweepConfig, paths: SweepPaths):
    """Continue from Ray's saved state: finished and errored trials stay as they are,
    unfinished ones continue from their last checkpoint; the searcher state comes back."""
    from ray import tune

    print(f"Resuming sweep {sweep.name!r} from {paths.experiment_path}")
    return tune.Tuner.restore(
        paths.experiment_path, trial_trainable(sweep),
        resume_unfinished=True, resume_errored=False, restart_errored=False,
    )


def build_scheduler(sweep: SweepConfig):
    if sweep.scheduler.kind == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",  # one iteration = one eval report
        max_t=sweep.max_reports,
        grace_period=sweep.scheduler.grace_period,
        reduction_factor=sweep.scheduler.reduction_factor,
    )


def build_run_config(sweep: SweepConfig, paths: SweepPaths):
    from ray import tune

    remote = "://" in paths.storage_path
    return tune.RunConfig(
        name=sweep.name,
        storage_path=paths.storage_path,
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=sweep.checkpoints_to_keep),
        # On remote storage the trial's adapter and reports live in its working dir: sync them.
        sync_config=tune.SyncConfig(sync_artifacts=True) if remote else None,
    )


def trial_trainable(sweep: SweepConfig):
    from ray import tune

    from trainable.tune import train_trial

    resources = {"cpu": sweep.resources_per_trial.cpu, "gpu": sweep.resources_per_trial.gpu}
    return tune.with_resources(train_trial, resources)


def trial_dirname(trial) -> str:
    """Short trial folders: Tune's default name would spell out the whole recipe."""
    return f"trial_{trial.trial_id}"


def report_results(sweep: SweepConfig, paths: SweepPaths, wall_seconds: float | None) -> int:
    from sweeps.results import describe_best, write_results

    results = write_results(paths.experiment_path, paths.results_dir, sweep, wall_seconds)
    print()
    print(describe_best(results, sweep))
    print(f"Results: {paths.results_dir}/ (trials.parquet, best.json, summary.md)")
    if results.unfinished:
        print(f"The sweep was interrupted; continue it with: python -m sweeps.run --resume --name {sweep.name}")
    return 0 if results.best is not None else 1


def analyze(name: str, overrides: list[str] | tuple[str, ...] = ()) -> int:
    """Rebuild the result files of an earlier sweep from its saved sweep.yaml and Ray state.
    ``max_wer_increase.*`` overrides choose the winner under another budget without
    training anything again; other keys describe the trials already run and cannot change."""
    results_dir = (RESULTS_ROOT / name).absolute()
    sweep_file, run_file = results_dir / "sweep.yaml", results_dir / "run.json"
    if not sweep_file.is_file() or not run_file.is_file():
        raise SweepConfigError(f"--analyze {name}: no sweep.yaml/run.json in {results_dir}; was a sweep of that name run here?")
    for override in overrides:
        keys, _ = parse_override(override)
        if keys[0] != "max_wer_increase":
            raise SweepConfigError(f"--analyze {name}: {'.'.join(keys)} describes trials already run; only max_wer_increase.* can change")
    sweep = load_sweep_config(sweep_file, overrides)
    run = json.loads(run_file.read_text())
    paths = SweepPaths(results_dir=results_dir, storage_path=run["storage_path"], experiment_path=run["experiment_path"])
    return report_results(sweep, paths, wall_seconds=None)


def _saved_storage(name: str, resume: bool) -> str | None:
    """On --resume, Ray's state is where the first run put it (run.json), even without --storage."""
    run_file = (RESULTS_ROOT / name / "run.json").absolute()
    if resume and run_file.is_file():
        return json.loads(run_file.read_text()).get("storage_path")
    return None


def _save_sweep(sweep: SweepConfig, paths: SweepPaths, resumed: bool) -> None:
    """The sweep as run (re-readable with --config) and where Ray keeps it, for --analyze."""
    import yaml

    header = f"# The sweep {sweep.name!r} as run (YAML + overrides). Rerun: python -m sweeps.run --config {paths.results_dir}/sweep.yaml\n"
    atomic_write_text(paths.results_dir / "sweep.yaml", header + yaml.safe_dump(sweep.to_dict(), sort_keys=False))
    run = {"storage_path": paths.storage_path, "experiment_path": paths.experiment_path, "command": sys.argv, "resumed": resumed, "time": time.time()}
    atomic_write_text(paths.results_dir / "run.json", json.dumps(run, indent=2) + "\n")


def _print_dashboard(url: str | None, remote: bool) -> None:
    if not url:
        print("Ray dashboard: not running (install ray[default] for it)")
        return
    url = url if "://" in url else f"http://{url}"
    print(f"Ray dashboard: {url}" + ("  (the cluster's; from another machine use `ray dashboard cluster.yaml`)" if remote else ""))
    print(f"Ray dashboard login token: {_token_location()}")


def _token_location() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")


def _warn_if_exposed(host: str) -> None:
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        bar = "!" * 78
        print(f"{bar}\nWARNING: the Ray dashboard will listen on {host}. Ray's dashboard and job API run\n"
              "arbitrary code for whoever reaches them (CVE-2023-48022). Only do this on a trusted\n"
              f"network behind a firewall; prefer 127.0.0.1 and an SSH tunnel.\n{bar}", file=sys.stderr)


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
