"""Ray Tune glue: one sweep trial is one ``train_and_evaluate`` call.

The Tune config is the whole recipe (the sweep's search space returns the fixed fields as
constants); this module only adds what belongs to the trial: its output folder, torch
threads matching its CPUs, the checkpoint it resumes from (the newest complete one, see
``sweeps.search.checkpoints``), and the node it ran on.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sweeps.cluster import check_data_on_node, trial_location
from sweeps.search.checkpoints import mark_complete, saved_report, unregistered_checkpoints
from sweeps.search.monitoring import TrialGauges, parameter_text, searched_values
from trainable.config import TrialConfig
from trainable.metrics import final_metrics

# Trial statuses in the results: Tune's, plus STOPPED_EARLY, a trial ended (by ASHA) before
# its final report, which alone carries COMPLETED_KEY = True.
COMPLETED, STOPPED_EARLY, ERROR = "TERMINATED", "STOPPED_EARLY", "ERROR"
COMPLETED_KEY = "completed"
# Field names shown in a failed trial's message, so it says which recipe failed.
_RECIPE_IN_ERRORS = ("learning_rate", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "max_steps", "seed")


class TrialFailed(RuntimeError):
    """A trial raised; the message says which recipe, at which step, on which node, and why."""


def train_trial(config: dict[str, Any], sweep: str = "", searched: tuple[str, ...] = ()) -> None:
    """The Tune function trainable: reports eval WER every ``eval_every`` steps with a
    checkpoint, so ASHA can stop it early and a retried or resumed trial continues.

    ``sweep`` (the Tune experiment's name) and ``searched`` (the searched fields) tag the
    trial's Ray metrics (``sweeps.search.monitoring``); the sweep passes them with
    ``tune.with_parameters``, since the Tune config holds recipe fields only.
    """
    from ray import tune

    from trainable.train import checkpoint_step

    context = tune.get_context()
    trial_dir = trial_directory(context)
    recipe = trial_config_from_tune(config, output_dir=trial_dir / "run", cpus=trial_cpus(context))
    node = trial_location()
    checkpoint = tune.get_checkpoint()
    unregistered = unregistered_checkpoints(trial_dir, checkpoint.path if checkpoint else None) if _in_storage(context) else []
    _log_attempt(trial_dir, node, checkpoint, unregistered)

    with TrialGauges(sweep, context.get_trial_id(), searched_values(config, searched)) as gauges:
        reporter = TuneReporter({**node, "num_threads": recipe.num_threads}, gauges)
        if _report_if_finished(recipe, reporter):
            return
        try:
            with checkpoint.as_directory() if checkpoint else nullcontext() as registered:
                resume_from = report_again(unregistered, reporter) or registered
                # A retried or resumed trial has reported up to its checkpoint's step already.
                reporter.last_step = checkpoint_step(resume_from)
                check_data_on_node(recipe)  # on a cluster: a worker without the data names itself
                _run(recipe, reporter, resume_from)
        except Exception as error:
            raise TrialFailed(describe_failure(error, recipe, reporter.last_step, node, context.get_trial_id())) from error


def trial_config_from_tune(config: dict[str, Any], output_dir: str | Path, cpus: int | None) -> TrialConfig:
    """Tune config -> TrialConfig, with this trial's output folder and thread count.

    ``from_dict`` turns set names ("qkvo") into module tuples and numpy scalars into
    Python numbers, and names any key that is no recipe field.
    """
    recipe = dict(config)
    recipe["output_dir"] = str(output_dir)
    recipe["num_threads"] = cpus
    return TrialConfig.from_dict(recipe)


def trial_cpus(context: Any) -> int | None:
    """Whole CPUs this trial holds (at least 1), so torch does not oversubscribe the node."""
    try:
        cpus = context.get_trial_resources().required_resources.get("CPU", 0)
    except Exception:  # no resource info (e.g. called outside a trial)
        return None
    return max(1, int(cpus)) if cpus else None


def trial_directory(context: Any) -> Path:
    """The trial's folder in the sweep's storage when that is a local or shared disk (so
    adapters and reports sit beside Tune's files and survive the driver); otherwise the
    trial's working folder, which Tune syncs to cloud storage as artifacts."""
    return Path(context.get_storage().trial_fs_path) if _in_storage(context) else Path(os.getcwd())


class TuneReporter:
    """The ``report`` callback: forwards metrics and the checkpoint folder to ``tune.report``,
    and sets the trial's Ray gauges from them.

    The core's folder lives only during the call; ``Checkpoint.from_directory`` inside
    ``tune.report`` copies it into the trial's storage before the call returns.
    """

    def __init__(self, extra: dict[str, Any], gauges: TrialGauges | None = None):
        self.extra = extra  # added to every report: node, node_ip, node_id, num_threads
        self.gauges = gauges
        # The step of the last report, for a failure message; a trial restored from a
        # checkpoint starts from that checkpoint's step (``checkpoint_step``), not 0.
        self.last_step = 0

    def __call__(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        row = {key: value for key, value in metrics.items() if key != "done"}
        # Tune reserves "done"; COMPLETED_KEY marks the final report (a trial ASHA stopped has none).
        row[COMPLETED_KEY] = bool(metrics.get("done", False))
        row.update(self.extra)
        self.send(row, checkpoint_dir)

    def send(self, row: dict[str, Any], checkpoint_dir: str | None) -> None:
        """Report ``row`` as it is; a checkpoint folder gets the row and its file listing
        (``sweeps.search.checkpoints``) before Tune copies it to storage."""
        from ray import tune

        self.last_step = int(row.get("step", self.last_step))
        if self.gauges:
            self.gauges.record(row)
        if checkpoint_dir:
            mark_complete(checkpoint_dir, row)
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(row, checkpoint=checkpoint)


def report_again(checkpoints: list[Path], reporter: TuneReporter) -> str | None:
    """Report each complete checkpoint Ray's saved state missed, with the row it was made
    with, in order; returns the last one's folder (where training continues), None without
    any. Tune copies a reported checkpoint into the folder it came from, so each goes from a
    temporary copy."""
    import shutil
    import tempfile

    for directory in checkpoints:
        with tempfile.TemporaryDirectory(prefix="checkpoint-") as copy:
            shutil.copytree(directory, copy, dirs_exist_ok=True)
            reporter.send(saved_report(directory), copy)
    return str(checkpoints[-1]) if checkpoints else None


def describe_failure(error: BaseException, recipe: TrialConfig, step: int, node: dict[str, str], trial_id: str) -> str:
    """One line for the results table: what failed, where, with which recipe, and a hint."""
    values = ", ".join(f"{name}={parameter_text(getattr(recipe, name))}" for name in _RECIPE_IN_ERRORS)
    where = f"at step {step} of {recipe.max_steps}" if step else "before the first report"
    hint = _hint(error)
    message = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return (
        f"trial {trial_id} failed {where} on {node.get('node', '?')}: {type(error).__name__}: {message}"
        f" [{values}]" + (f" (hint: {hint})" if hint else "")
    )


def _run(recipe: TrialConfig, reporter: TuneReporter, resume_from: str | None) -> None:
    from trainable.pipeline import train_and_evaluate

    train_and_evaluate(recipe, report=reporter, resume_from=resume_from)


def _report_if_finished(recipe: TrialConfig, reporter: TuneReporter) -> bool:
    """A trial that finished just before the driver died (its end not yet in the sweep's
    saved state) comes back as unfinished on resume. Its summary.json says it is done,
    so report that instead of training it again."""
    summary_path = Path(recipe.output_dir) / "summary.json"
    if not summary_path.is_file():
        return False
    summary = json.loads(summary_path.read_text())
    reporter(final_metrics(summary) | {"step": summary["steps"], "done": True, "reported_from_summary": True}, None)
    return True


def _log_attempt(trial_dir: Path, node: dict[str, str], checkpoint: Any, unregistered: list[Path]) -> None:
    """One line per start of this trial (first run, retry, resume), so restarts are visible:
    the checkpoint it continues from, and those it reports again first (``report_again``)."""
    try:
        trial_dir.mkdir(parents=True, exist_ok=True)
        resumed_from = str(unregistered[-1]) if unregistered else getattr(checkpoint, "path", None)
        line = {"time": time.time(), "pid": os.getpid(), **node, "resumed_from": resumed_from,
                "reported_again": [directory.name for directory in unregistered]}
        with open(trial_dir / "attempts.jsonl", "a") as log:
            log.write(json.dumps(line) + "\n")
    except OSError:
        pass  # a read-only or remote trial dir must not fail the trial


def _is_local_filesystem(filesystem: Any) -> bool:
    return type(filesystem).__name__ == "LocalFileSystem"


def _in_storage(context: Any) -> bool:
    """Whether ``trial_directory`` is the trial's folder in the sweep's storage, where its
    checkpoints are (not on cloud storage, which this does not list)."""
    storage = context.get_storage()
    return storage is not None and _is_local_filesystem(storage.storage_filesystem)


def _hint(error: BaseException) -> str:
    name, text = type(error).__name__, str(error).lower()
    if name == "ManifestError":
        return "fix the manifest, or set trial.on_bad_row=skip to drop bad rows"
    if name == "NonFiniteLossError" or "nan" in text:
        return "training diverged; lower learning_rate or its search range"
    if "out of memory" in text or name == "OutOfMemoryError":
        return "lower trial.batch_size / eval_batch_size, or give each trial more GPU (resources_per_trial.gpu)"
    return ""
