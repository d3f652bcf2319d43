"""One sweep as a Ray Tune experiment: where it lives, how it is built, resumed and checked.

Optuna proposes (``sweeps.search.space``), ASHA stops poor trials, every trial is one
``train_and_evaluate`` call (``sweeps.search.trial``) that checkpoints at each report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

from sweeps.search.config import SweepConfig
from sweeps.search.racing import RACING_SUFFIX, keeps_budgets
from sweeps.wording import counted
from trainable.config import DEMO_MODEL, parse_target_modules, target_module_set_name
from trainable.config_io import ConfigError, read_json
from trainable.files import atomic_write_json, atomic_write_text
from trainable.metrics import metric_value, wer_increase_name
from trainable.preflight import check_inputs, input_exists, looks_like_local_path, module_tree_to_check

RESULTS_ROOT = Path("results")
STUDY_DB = "optuna.db"  # the Optuna study (SQLite) in a sweep's results folder


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
        return self.results_dir / STUDY_DB


def check_experiment(sweep: SweepConfig, paths: SweepPaths, resume: bool) -> bool:
    """Whether to restore: never start over an existing sweep by accident (its trials would
    mix with the new ones), and say so when --resume finds nothing. A --resume of a sweep
    stopped before Ray's first save starts it over (``restorable``)."""
    from ray.tune import Tuner

    exists = Tuner.can_restore(paths.experiment_path)
    if exists and not resume:
        raise ConfigError(
            f"sweep {sweep.name!r} already exists at {paths.experiment_path}; add --resume to continue it, "
            f"--name {sweep.name}-2 for a new one, or delete {paths.results_dir} to start over"
        )
    if resume and not exists:
        known = ", ".join(existing_sweeps()) or "none"
        raise ConfigError(
            f"--resume: no sweep {sweep.name!r} to resume at {paths.experiment_path}; sweeps under "
            f"{RESULTS_ROOT.absolute()}/: {known}. Check --name (or --storage), or drop --resume to start it"
        )
    return exists and restorable(paths.experiment_path, f"sweep {sweep.name!r}")


def restorable(experiment_path: str, what: str) -> bool:
    """Whether ``Tuner.restore`` can continue the experiment at ``experiment_path``.

    Tune writes tuner.pkl as it builds the Tuner, but saves the experiment state (its trials,
    the searcher's state) only at the end of its first step, after it has asked the searcher
    for the first trials. A driver killed in between leaves tuner.pkl without that state;
    restoring it, Ray 2.60 logs "Restarting experiment", runs a budget of one trial
    (``Tuner.restore`` does not hand num_samples on) and never restores the searcher, so
    Optuna's first trials stay RUNNING. No trial has reported by then, so the experiment
    starts over instead, saying so; one whose trials hold checkpoints is refused."""
    from ray.tune import Tuner

    if not Tuner.can_restore(experiment_path):
        return False
    if has_saved_state(experiment_path):
        return True
    trained = trials_with_checkpoints(experiment_path)
    if trained:
        raise ConfigError(
            f"{what} at {experiment_path} has no experiment state (experiment_state-*.json) for Ray to resume it from, "
            f"yet trials {', '.join(trained)} hold checkpoints; starting it over would leave them behind. "
            f"Start a new sweep with --name, or delete {experiment_path} to start this one over"
        )
    print(f"note: {what} stopped before Ray saved its first experiment state (no experiment_state-*.json in "
          f"{experiment_path}), so no trial had reported: starting it over", flush=True)
    return False


def has_saved_state(experiment_path: str) -> bool:
    """Whether Ray saved the state of the experiment (an experiment_state-*.json), which
    ``Tuner.restore`` and ``ExperimentAnalysis`` read. Ray's own lookup, so local and remote
    storage are read alike."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    return _find_newest_experiment_checkpoint(experiment_path) is not None


def trials_with_checkpoints(experiment_path: str) -> list[str]:
    """The trial folders of an experiment (local or remote) that hold a checkpoint."""
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(experiment_path)

    def listing(path: str) -> list:
        return filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))

    return sorted(trial.base_name for trial in listing(root) if trial.type == pyarrow.fs.FileType.Directory
                  and any(entry.base_name.startswith("checkpoint_") for entry in listing(trial.path)))


def existing_sweeps(results_root: Path = RESULTS_ROOT) -> list[str]:
    """Names of the sweeps started here: folders of results_root with the run.json a sweep writes."""
    return sorted(run_file.parent.name for run_file in results_root.glob("*/run.json"))


def check_inputs_exist(sweep: SweepConfig) -> None:
    """Missing manifests or model would fail every trial the same way: say so before Ray starts.
    (A hub id such as UsefulSensors/moonshine-tiny is no local path and is not checked.)"""
    from sweeps.search.space import with_absolute_paths

    trial = sweep.trial.resolved()
    if sweep.trial.model == DEMO_MODEL and not Path(trial.model).exists():
        raise ConfigError(f"trial.model: {trial.model} does not exist (build the bundled demo model with: "
                          "python -m demo.pretrain --corpus data/demo/source --out data/demo/model)")
    check_inputs(trial, prefix="trial.")
    for name, spec in sweep.confirm_on:  # repro reads it, not a trial: say so now, not after the sweep
        confirm = trial.replace(eval_manifests=((name, spec),)).resolved()
        path = confirm.eval_manifests[0][1]
        if not input_exists("eval_manifests", path):
            raise ConfigError(f"confirm_on.{name}: {path} does not exist")
    for param in with_absolute_paths(sweep).search:
        for choice in param.choices if param.name in ("train_manifest", "model") else ():
            field = "train_manifest" if param.name == "train_manifest" else "model"
            local = field == "train_manifest" or looks_like_local_path(choice)
            if local and not input_exists(field, choice):
                raise ConfigError(f"search.{param.name}.choices: {choice} does not exist")


def searched_or_fixed(sweep: SweepConfig, name: str) -> tuple:
    """Every value a recipe field takes in this sweep: its choices when searched, else the fixed one."""
    from sweeps.search.space import with_absolute_paths

    for param in with_absolute_paths(sweep).search:
        if param.name == name and param.kind == "choice":
            return param.choices
    return (getattr(sweep.trial.resolved(), name),)


def check_target_modules_exist(sweep: SweepConfig) -> None:
    """Every target-module set of the sweep (in every adapter scope) exists in every model it
    may train, checked on the module tree alone (torch's meta device: no weights loaded), so
    a typo fails here rather than in every trial. A hub model whose config cannot be read
    here is left to the trials (a cluster's workers may reach the hub where this machine
    cannot)."""
    from trainable.model import check_target_modules

    where = "search.target_modules.choices" if "target_modules" in sweep.searched_names else "trial.target_modules"
    model_key = "search.model.choices" if "model" in sweep.searched_names else "trial.model"
    for model in searched_or_fixed(sweep, "model"):
        tree = module_tree_to_check(model, model_key, "trials")
        if tree is None:
            continue
        for modules in searched_or_fixed(sweep, "target_modules"):
            for scope in searched_or_fixed(sweep, "adapter_scope"):
                try:
                    check_target_modules(tree, parse_target_modules(modules), scope)
                except ValueError as error:
                    shown = target_module_set_name(modules) if isinstance(modules, tuple) else modules
                    raise ConfigError(f"{where}: {shown!r} with adapter_scope {scope!r} in model {model}: {error}") from None


def check_device_here(sweep: SweepConfig) -> None:
    """A local sweep's trials run on this machine: a device it lacks would fail every one."""
    from trainable.model import DeviceError, select_device

    for device in searched_or_fixed(sweep, "device"):
        try:
            select_device(device)
        except DeviceError as error:
            raise ConfigError(f"trial.device: {device!r} is not available on this machine ({error}); set trial.device=auto or cpu") from None


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


@dataclass(frozen=True)
class TrialConcurrency:
    """How many trials could run at once when the sweep ran: ``max_concurrent_trials``, or
    fewer when the cluster's nodes fit fewer trials of ``resources_per_trial`` (each trial
    on one node). ``trials_that_fit`` None: not recorded (a run.json from before it was)."""

    max_concurrent_trials: int
    trials_that_fit: int | None = None
    cluster_resources: tuple[tuple[str, float], ...] = ()  # CPU and GPU of every node together
    resources_per_trial: tuple[tuple[str, float], ...] = ()

    @property
    def trials(self) -> int:
        if not self.trials_that_fit:  # none fit when it started: an autoscaler may have added nodes
            return self.max_concurrent_trials
        return min(self.max_concurrent_trials, self.trials_that_fit)

    def describe(self) -> str:
        """Which limit gave ``trials``, for the summary's overhead ratio."""
        if self.trials_that_fit is None:
            return "max_concurrent_trials; how many trials the cluster fit was not recorded"
        if not self.trials_that_fit:
            return "max_concurrent_trials; no node fit a trial when the sweep started"
        per_trial = " + ".join(f"{amount:g} {name}" for name, amount in self.resources_per_trial if amount)
        cluster = " + ".join(f"{amount:g} {name}" for name, amount in self.cluster_resources if amount or name == "CPU")
        fit = (f"the cluster's {cluster} fit {counted(self.trials_that_fit, 'trial')} "
               f"of resources_per_trial {per_trial}")
        if self.trials_that_fit < self.max_concurrent_trials:
            return f"{fit}, fewer than max_concurrent_trials {self.max_concurrent_trials}"
        return f"max_concurrent_trials; {fit}"

    def to_dict(self) -> dict[str, Any]:
        return {"max_concurrent_trials": self.max_concurrent_trials, "trials_that_fit": self.trials_that_fit,
                "cluster_resources": dict(self.cluster_resources), "resources_per_trial": dict(self.resources_per_trial)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrialConcurrency":
        return cls(raw["max_concurrent_trials"], raw.get("trials_that_fit"), tuple(raw.get("cluster_resources", {}).items()),
                   tuple(raw.get("resources_per_trial", {}).items()))


def trial_concurrency(sweep: SweepConfig, nodes: list[dict[str, Any]]) -> TrialConcurrency:
    """What ``nodes`` (``ray.nodes()``) let the sweep run at once: a trial holds its
    ``resources_per_trial`` on one node, so each node fits as many as its scarcest resource allows."""
    wanted = {"CPU": sweep.resources_per_trial.cpu, "GPU": sweep.resources_per_trial.gpu}
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
    fit = sum(min(int(have.get(name, 0.0) / need + 1e-9) for name, need in wanted.items() if need > 0) for have in alive)
    cluster = tuple((name, float(sum(have.get(name, 0.0) for have in alive))) for name in wanted)
    return TrialConcurrency(sweep.max_concurrent_trials, fit, cluster, tuple(wanted.items()))


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
    run_config = build_run_config(sweep, paths, sweep.name, sweep.searched_names, best_among=partial(could_win, sweep=sweep))
    return tune.Tuner(trial_trainable(sweep, sweep.name, sweep.searched_names), tune_config=tune_config, run_config=run_config)


def restore_tuner(sweep: SweepConfig, paths: SweepPaths):
    """The search, continued from Ray's saved state (``restored_experiment``)."""
    print(f"Resuming sweep {sweep.name!r} from {paths.experiment_path}")
    return restored_experiment(paths.experiment_path, trial_trainable(sweep, sweep.name, sweep.searched_names))


def restored_experiment(path: str, trainable: Any):
    """A Tune experiment continued from its saved state: finished and errored trials stay as
    they are, unfinished ones continue from their last checkpoint; the searcher state comes back."""
    from ray import tune

    return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False, restart_errored=False)


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
    from sweeps.search.racing import choose_finalists, race_recipes
    from sweeps.search.trial import COMPLETED

    if restorable(paths.racing_path, f"the race of sweep {sweep.name!r}"):
        print(f"Resuming the race of sweep {sweep.name!r} from {paths.racing_path}")
        tuner = restored_experiment(paths.racing_path, trial_trainable(sweep, racing_name(sweep), racing_parameters(sweep)))
    else:
        finalists = choose_finalists(search_trials, sweep, COMPLETED)
        if not finalists:
            print("Racing: no fully trained trial keeps the budgets, so there is nothing to race")
            return
        recipes = race_recipes(finalists, sweep)
        print(f"Racing {counted(len(finalists), 'finalist')} with {counted(sweep.racing.seeds, 'new seed')} each "
              f"({counted(len(recipes), 'race trial')})")
        tuner = build_racing_tuner(sweep, paths, recipes)
    tuner.fit()


def build_racing_tuner(sweep: SweepConfig, paths: SweepPaths, recipes: list[dict]):
    from ray import tune

    from sweeps.search.searcher import FixedRecipes

    tune_config = tune.TuneConfig(
        metric=sweep.metric,  # for the console's sort order
        mode=sweep.mode,
        search_alg=FixedRecipes(recipes, metric=sweep.metric, mode=sweep.mode),
        num_samples=len(recipes),
        max_concurrent_trials=sweep.max_concurrent_trials,
        trial_dirname_creator=trial_dirname,
    )
    name, parameters = racing_name(sweep), racing_parameters(sweep)
    run_config = build_run_config(sweep, paths, name, parameters)
    return tune.Tuner(trial_trainable(sweep, name, parameters), tune_config=tune_config, run_config=run_config)


def racing_name(sweep: SweepConfig) -> str:
    return sweep.name + RACING_SUFFIX


def racing_parameters(sweep: SweepConfig) -> tuple[str, ...]:
    """What tells race trials apart: the finalists' searched fields and the new seed."""
    return sweep.searched_names + (("seed",) if "seed" not in sweep.searched_names else ())


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


def build_run_config(sweep: SweepConfig, paths: SweepPaths, name: str, parameters: tuple[str, ...],
                     best_among: Callable[[Mapping[str, Any]], bool] | None = None):
    """The experiment ``name`` in the sweep's storage; ``parameters`` (the fields that tell
    its trials apart) are the console table's parameter columns; ``best_among``: which trials
    the console's best-trial line may name (none in the race, whose winner is a mean)."""
    from ray import tune

    from sweeps.search.monitoring import progress_reporter

    remote = "://" in paths.storage_path
    return tune.RunConfig(
        name=name,
        storage_path=paths.storage_path,
        # Experiment-level output only (1): the table, not every result of every trial.
        verbose=1,
        progress_reporter=progress_reporter(sweep, parameters, best_among),
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=sweep.checkpoints_to_keep),
        # On remote storage the trial's adapter and reports live in its working dir: sync them.
        sync_config=tune.SyncConfig(sync_artifacts=True) if remote else None,
    )


def trial_trainable(sweep: SweepConfig, name: str, parameters: tuple[str, ...]):
    """``train_trial`` with the experiment's name and the fields that tell its trials apart
    (for its Ray metrics and its actor's label), and the sweep's resources per trial."""
    from ray import tune

    from sweeps.search.monitoring import labelled_actor
    from sweeps.search.trial import train_trial

    trainable = tune.with_parameters(train_trial, sweep=name, searched=parameters)
    trainable.__mixins__ = (labelled_actor(parameters),)  # Tune's hook for extending a function trainable's class
    resources = {"cpu": sweep.resources_per_trial.cpu, "gpu": sweep.resources_per_trial.gpu}
    return tune.with_resources(trainable, resources)


def could_win(report: Mapping[str, Any], sweep: SweepConfig) -> bool:
    """Whether a trial's latest report lets it win the search, by ``results.best_trial``'s
    rule: its final report (a trial ASHA stopped has none), every budget kept."""
    from sweeps.search.trial import COMPLETED_KEY

    increases = {name: metric_value(report.get(wer_increase_name(name))) for name, _ in sweep.max_wer_increase}
    return bool(report.get(COMPLETED_KEY)) and keeps_budgets(increases, sweep)


def trial_dirname(trial) -> str:
    """Short trial folders: Tune's default name would spell out the whole recipe."""
    return f"trial_{trial.trial_id}"


def saved_storage(name: str, resume: bool) -> str | None:
    """On --resume, Ray's state is where the first run put it (run.json), even without --storage."""
    run_file = (RESULTS_ROOT / name / "run.json").absolute()
    if resume and run_file.is_file():
        return json.loads(run_file.read_text()).get("storage_path")
    return None


def save_sweep(sweep: SweepConfig, paths: SweepPaths, resumed: bool, concurrency: TrialConcurrency | None = None,
               continued: bool | None = None, *, command: str) -> None:
    """The sweep as run (re-readable with --config), where Ray keeps it (for --analyze), and
    every invocation that ran it (the one that started it, then each --resume) with how
    many trials could run at once in it. ``command``: this invocation as the user reruns it. ``resumed``: Ray's saved state was restored;
    ``continued`` (default: ``resumed``): the earlier invocations are kept, also for a
    --resume that starts over a sweep stopped before Ray's first save."""
    import yaml

    header = f"# The sweep {sweep.name!r} as run (YAML + overrides). Rerun: python -m sweeps.run --config {paths.results_dir}/sweep.yaml\n"
    atomic_write_text(paths.results_dir / "sweep.yaml", header + yaml.safe_dump(sweep.to_dict(), sort_keys=False))
    run_file = paths.results_dir / "run.json"
    keep = resumed if continued is None else continued
    earlier = invocations(read_json(run_file)) if keep and run_file.is_file() else []
    invocation = {"command": command, "time": time.time(), "resumed": resumed}
    if concurrency is not None:
        invocation["concurrency"] = concurrency.to_dict()
    run = {"storage_path": paths.storage_path, "experiment_path": paths.experiment_path, "invocations": [*earlier, invocation]}
    atomic_write_json(run_file, run)


def invocations(run: dict[str, Any]) -> list[dict[str, Any]]:
    """run.json's invocations in order, the one that started the sweep first. A run.json
    written before they were kept holds its one invocation at the top level."""
    if "invocations" in run:
        return list(run["invocations"])
    return [{key: run[key] for key in ("command", "time", "resumed", "wall_seconds") if key in run}] if "command" in run else []


def record_wall_time(results_dir: Path, wall_seconds: float) -> None:
    """The wall time of this invocation (the last in run.json), search and race together."""
    run = read_json(results_dir / "run.json")
    run["invocations"] = invocations(run)
    run["invocations"][-1]["wall_seconds"] = wall_seconds
    run.pop("wall_seconds", None)
    atomic_write_json(results_dir / "run.json", run)


def one_go_timing(run: dict[str, Any]) -> tuple[float | None, TrialConcurrency | None]:
    """The sweep's wall time and trial concurrency when one invocation ran all of it (the
    last that started it, not resuming Ray's state); (None, None) once it was resumed: the
    trial time then spans several invocations, so no wall time matches it."""
    ran = invocations(run)
    starts = [index for index, entry in enumerate(ran) if not entry.get("resumed")]
    ran = ran[starts[-1]:] if starts else ran
    if len(ran) != 1 or ran[0].get("resumed"):
        return None, None
    concurrency = ran[0].get("concurrency")
    return ran[0].get("wall_seconds"), TrialConcurrency.from_dict(concurrency) if concurrency else None
