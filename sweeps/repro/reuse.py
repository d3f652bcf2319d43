"""Seed runs a repro folder already holds, so a repeated or extended repro trains only the rest.

``trainable.pipeline.train_and_evaluate`` writes a run's folder whole (a staging folder renamed
into place), so a ``seed_<n>`` or ``seed_<n>_rerun`` folder with a summary.json is a finished
run, and that summary.json records the recipe, device and library versions it ran with. The run
is reused when they are the ones repro would run now, apart from ``NOT_THE_RECIPE``; otherwise
the seed trains again into the same folder, which the trainable replaces once the new run
has finished.

Only what the driver can read is reused: on a cluster a seed folder may sit on the worker that
ran it, and that seed then trains again. A folder that cannot be read is a reason to train,
never an error.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from sweeps.repro.seeds import seed_result
from trainable.config import TrialConfig

# Fields that say where a run wrote and how many CPU threads torch used, not what it learns:
# the output dir is the folder itself (a repro folder may have been moved), and the thread
# count (--cpus-per-trial) splits the same arithmetic across cores (the tiny test model gives
# identical hypotheses with 1 and 2 threads). A float reduction split otherwise could still
# round differently, so a determinism rerun whose seed ran with another count says so
# (sweeps.repro.seeds.rerun_checks). Every other field decides the result.
NOT_THE_RECIPE = ("output_dir", "num_threads")
# The libraries whose versions change what the same recipe computes.
LIBRARIES = ("torch", "transformers", "peft")


def reuse_finished_runs(
    runs: Sequence[tuple[int, bool, TrialConfig]], device: str | None, retrain: bool,
) -> tuple[list[dict[str, Any]], list[tuple[int, bool, TrialConfig]]]:
    """(results of the seed runs reused from their folders, the seed runs still to train).
    Prints one line per run reused, or trained again for a reason; ``retrain`` reuses none.
    ``device``: the device a seed would run on now, when the driver can tell (None on a cluster)."""
    if retrain:
        _say_retrain(runs)
        return [], list(runs)
    reused, to_train = [], []
    for seed, rerun, config in runs:
        kind = "rerun" if rerun else "seed"
        found, why_not = finished_run(config, device)
        if found is None:
            if why_not:
                print(f"repro: {kind} {seed} trains again: {why_not}", flush=True)
            to_train.append((seed, rerun, config))
            continue
        reused.append({**found, "seed": seed, "rerun": rerun, "output_dir": config.output_dir, "node": None, "reused": True})
        print(f"repro: {kind} {seed} reused (finished earlier in {shown(config.output_dir)} with the same recipe)", flush=True)
    return reused, to_train


def _say_retrain(runs: Sequence[tuple[int, bool, TrialConfig]]) -> None:
    earlier = [config.output_dir for _, _, config in runs if Path(config.output_dir).exists()]
    if earlier:
        print(f"repro: --retrain: every seed trains again; {len(earlier)} earlier seed folder"
              f"{'s are' if len(earlier) != 1 else ' is'} replaced as its seed finishes", flush=True)


def finished_run(config: TrialConfig, device: str | None) -> tuple[dict[str, Any] | None, str]:
    """(the run's result, "") when ``config.output_dir`` holds a finished run of this recipe;
    else (None, why not), with an empty why when there is no such folder here."""
    folder = Path(config.output_dir)
    if not folder.is_dir():
        return None, ""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        differences = recipe_differences(summary, config, device)
        if differences:
            return None, f"{shown(folder)} holds another recipe ({'; '.join(differences)})"
        return seed_result(summary, config), ""
    except (OSError, ValueError, LookupError, TypeError, AttributeError) as error:  # ConfigError is a ValueError
        return None, f"{shown(folder)} holds no finished run that can be read here ({type(error).__name__}: {error})"


def recipe_differences(summary: dict[str, Any], config: TrialConfig, device: str | None) -> list[str]:
    """What makes a finished run's summary.json another recipe than ``config``: "field: X there,
    Y now" for each recipe field, manifest file, library version or device that differs."""
    there = TrialConfig.from_dict(summary["config"])
    differences = [f"{f.name}: {getattr(there, f.name)!r} there, {getattr(config, f.name)!r} now"
                   for f in fields(TrialConfig) if f.name not in NOT_THE_RECIPE and getattr(there, f.name) != getattr(config, f.name)]
    if differences:
        return differences  # the data and versions below only matter for the same recipe
    differences += _changed_manifests(summary.get("manifest_sha256") or {}, config)
    differences += _changed_versions(summary.get("versions") or {})
    if device and summary.get("device") != device:
        differences.append(f"device: ran on {summary.get('device')}, would run on {device} now")
    return differences


def _changed_manifests(recorded: dict[str, str], config: TrialConfig) -> list[str]:
    """Manifest files whose content changed since the run (a dataset's digest needs its rows
    read, so datasets are compared by spec alone)."""
    from trainable.sources import manifest_sha256

    changed = []
    for name, spec in [("train", config.train_manifest), *config.eval_manifests]:
        now = manifest_sha256(spec)
        if now and recorded.get(name) and recorded[name] != now:
            changed.append(f"{spec} changed since (SHA-256 {recorded[name][:12]} there, {now[:12]} now)")
    return changed


def _changed_versions(recorded: dict[str, str | None]) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    changed = []
    for package in LIBRARIES:
        try:
            now = version(package)
        except PackageNotFoundError:
            now = None
        if recorded.get(package) != now:
            changed.append(f"{package} {recorded.get(package)} there, {now} now")
    return changed


def shown(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies under it, as a user typed it."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
