"""One sweep as a Ray Tune experiment: where it lives, how it is built, resumed and checked.

Optuna proposes (``sweeps.search.space``), ASHA stops poor trials, every trial is one
``train_and_evaluate`` call (``sweeps.search.trial``) that checkpoints at each report.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sweeps.search.config import SweepConfig
from sweeps.search.racing import RACING_SUFFIX
from trainable.config import DEMO_MODEL
from trainable.config_io import ConfigError
from trainable.files import atomic_write_json, atomic_write_text

RESULTS_ROOT = Path("results")


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

    @property
    def racing_path(self) -> str:
        """The racing experiment, beside the search's in the same storage."""
        return self.experiment_path + RACING_SUFFIX

    @property
    def study_db(self) -> Path:
        """The Optuna study (SQLite), which optuna-dashboard opens."""
        return self.results_dir / "optuna.db"


def check_experiment(sweep: SweepConfig, paths: SweepPaths, resume: bool) -> bool:
    """Whether to restore: never start over an existing sweep by accident (its trials would
    mix with the new ones), and say so when --resume finds nothing."""
    from ray.tune import Tuner

    exists = Tuner.can_restore(paths.experiment_path)
    if exists and not resume:
        raise ConfigError(
            f"sweep {sweep.name!r} already exists at {paths.experiment_path}; add --resume to continue it, "
            f"--name {sweep.name}-2 for a new one, or delete {paths.results_dir} to start over"
        )
    if resume and not exists:
        print(f"note: nothing to resume at {paths.experiment_path}; starting sweep {sweep.name!r}")
    return exists


def check_inputs_exist(sweep: SweepConfig) -> None:
    """Missing manifests or model would fail every trial the same way: say so before Ray starts.
    (A hub id such as UsefulSensors/moonshine-tiny is no local path and is not checked.)"""
    from sweeps.search.space import with_absolute_paths

    trial = sweep.trial.resolved()
    paths = [("trial.train_manifest", trial.train_manifest)]
    paths += [(f"trial.eval_manifests.{name}", path) for name, path in trial.eval_manifests]
    if _looks_like_local_path(sweep.trial.model):
        paths.append(("trial.model", trial.model))
    for param in with_absolute_paths(sweep).search:
        if param.name == "train_manifest":
            paths += [("search.train_manifest.choices", choice) for choice in param.choices]
    for key, path in paths:
        if "://" not in path and not _input_exists(key, path):
            hint = " (build the bundled demo model with: python -m demo.pretrain --corpus data/demo/source --out data/demo/model)" if sweep.trial.model == DEMO_MODEL else ""
            raise ConfigError(f"{key}: {path} does not exist{hint}")


def _input_exists(key: str, path: str) -> bool:
    """The model directory, or a manifest or dataset (a hub dataset is fetched where it is read)."""
    from trainable.sources import is_hub_spec, source_exists

    return Path(path).exists() if key == "trial.model" else is_hub_spec(path) or source_exists(path)


def _looks_like_local_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") != 1 or Path(model).exists()


def check_local_resources(sweep: SweepConfig, available: dict[str, float]) -> None:
    """A trial asking for more than this machine has would wait forever: say so instead.
    (Not on a cluster, where an autoscaler may still add the node that fits.)"""
    wanted = sweep.resources_per_trial
    for key, resource in (("gpu", "GPU"), ("cpu", "CPU")):
        have, need = available.get(resource, 0.0), getattr(wanted, key)
        if need > have:
            raise ConfigError(
                f"resources_per_trial.{key}: each trial asks for {need:g} {resource} but this machine has {have:g}; "
                f"override it, e.g. resources_per_trial.{key}={have:g}" + (" trial.device=cpu" if key == "gpu" else "")
            )


def build_tuner(sweep: SweepConfig, paths: SweepPaths):
    """A new Tune experiment: Optuna proposes, ASHA stops poor trials, each trial checkpoints."""
    from ray import tune

    from sweeps.search.space import build_search_space, build_searcher, with_absolute_paths

    searched = with_absolute_paths(sweep)
    space = build_search_space(searched, sweep.trial.resolved())
    forget_stale_study(paths.study_db, sweep.name)
    tune_config = tune.TuneConfig(
        metric=sweep.metric,
        mode=sweep.mode,
        search_alg=build_searcher(searched, space, paths.study_db),
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


def forget_stale_study(study_db: Path, name: str) -> None:
    """A new sweep of a name whose Ray state is gone may find that name's study still in
    optuna.db; its trials would mix with the new ones, so it is deleted first."""
    if not study_db.is_file():
        return
    import optuna

    from sweeps.search.space import study_storage

    storage = study_storage(study_db)
    if name in {summary.study_name for summary in optuna.get_all_study_summaries(storage)}:
        print(f"note: {study_db} held an earlier study {name!r} with no Ray state left; starting it afresh")
        optuna.delete_study(study_name=name, storage=storage)


def run_racing(sweep: SweepConfig, paths: SweepPaths, search_trials) -> None:
    """Race the finalists (``sweeps.search.racing``) as a second Tune experiment, or resume
    that race where it stopped."""
    from ray import tune

    from sweeps.search.racing import choose_finalists, race_recipes
    from sweeps.search.trial import COMPLETED

    if tune.Tuner.can_restore(paths.racing_path):
        print(f"Resuming the race of sweep {sweep.name!r} from {paths.racing_path}")
        tuner = tune.Tuner.restore(paths.racing_path, trial_trainable(sweep), resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        finalists = choose_finalists(search_trials, sweep, COMPLETED)
        if not finalists:
            print("Racing: no fully trained trial keeps the budgets, so there is nothing to race")
            return
        recipes = race_recipes(finalists, sweep)
        print(f"Racing {len(finalists)} finalists with {sweep.racing.seeds} new seeds each ({len(recipes)} trials)")
        tuner = build_racing_tuner(sweep, paths, recipes)
    tuner.fit()


def build_racing_tuner(sweep: SweepConfig, paths: SweepPaths, recipes: list[dict]):
    from ray import tune

    from sweeps.search.searcher import FixedRecipes

    tune_config = tune.TuneConfig(
        search_alg=FixedRecipes(recipes, metric=sweep.metric, mode=sweep.mode),
        num_samples=len(recipes),
        max_concurrent_trials=sweep.max_concurrent_trials,
        trial_dirname_creator=trial_dirname,
    )
    run_config = build_run_config(sweep, paths)
    run_config.name = sweep.name + RACING_SUFFIX
    return tune.Tuner(trial_trainable(sweep), tune_config=tune_config, run_config=run_config)


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

    from sweeps.search.trial import train_trial

    resources = {"cpu": sweep.resources_per_trial.cpu, "gpu": sweep.resources_per_trial.gpu}
    return tune.with_resources(train_trial, resources)


def trial_dirname(trial) -> str:
    """Short trial folders: Tune's default name would spell out the whole recipe."""
    return f"trial_{trial.trial_id}"


def saved_storage(name: str, resume: bool) -> str | None:
    """On --resume, Ray's state is where the first run put it (run.json), even without --storage."""
    run_file = (RESULTS_ROOT / name / "run.json").absolute()
    if resume and run_file.is_file():
        return json.loads(run_file.read_text()).get("storage_path")
    return None


def save_sweep(sweep: SweepConfig, paths: SweepPaths, resumed: bool) -> None:
    """The sweep as run (re-readable with --config) and where Ray keeps it, for --analyze."""
    import yaml

    header = f"# The sweep {sweep.name!r} as run (YAML + overrides). Rerun: python -m sweeps.run --config {paths.results_dir}/sweep.yaml\n"
    atomic_write_text(paths.results_dir / "sweep.yaml", header + yaml.safe_dump(sweep.to_dict(), sort_keys=False))
    run = {"storage_path": paths.storage_path, "experiment_path": paths.experiment_path, "command": sys.argv, "resumed": resumed, "time": time.time()}
    atomic_write_json(paths.results_dir / "run.json", run)
