"""What a recipe must pass before any work starts: its input paths exist, and its output
folder can be written and holds nothing but an earlier run's outputs.

A mistake found here costs a second; found after the model is loaded and every audio file
decoded, it costs minutes, and in a sweep it fails every trial the same way. Standard
library only, so the command lines run these checks before torch or Ray load. (Whether the
target modules exist needs the model: ``trainable.model.check_target_modules``.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from trainable.config import TrialConfig
from trainable.config_io import ConfigError

# What a run writes into its output folder (trainable.pipeline); a folder holding only
# these is an earlier run's, and a new run may replace it.
RUN_OUTPUT_NAMES = ("lora_adapter", "processor", "summary.json", "trn")
RUN_OUTPUT_SUFFIXES = ("_baseline.json", "_tuned.json")


def check_inputs(config: TrialConfig, prefix: str = "") -> None:
    """Model (when it is a local path), train and eval manifests or datasets exist (a hub
    dataset is fetched where it is read); ``config`` is resolved. ``prefix`` ("trial.")
    makes the message name the key as the user wrote it."""
    missing = missing_input(config)
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: {missing[1]} does not exist")


def missing_input(config: TrialConfig) -> tuple[str, str] | None:
    """The first (field, path) the resolved recipe reads that is not here, or None."""
    return next(((field, path) for field, path in input_paths(config) if not input_exists(field, path)), None)


def input_exists(field: str, path: str) -> bool:
    """The model folder, or a manifest or local dataset, is readable here; a URL (``s3://``)
    or a hub dataset is read where it is used, so it counts as present."""
    from trainable.sources import is_hub_spec, source_exists

    if "://" in path:
        return True
    return Path(path).exists() if field == "model" else is_hub_spec(path) or source_exists(path)


def input_paths(config: TrialConfig) -> list[tuple[str, str]]:
    """(field, path) for every file or folder the recipe reads; a hub model id is none."""
    paths = [("train_manifest", config.train_manifest)]
    paths += [(f"eval_manifests.{name}", path) for name, path in config.eval_manifests]
    if looks_like_local_path(config.model):
        paths.append(("model", config.model))
    return paths


def module_tree_to_check(model: str, where: str, before: str):
    """The model's module tree (torch's meta device, no weights), to check target modules
    against before ``before`` start; None, with a note, for a hub model whose config cannot
    be read here (a cluster's workers may reach the hub where this machine cannot). A local
    model that cannot be read is a ``ConfigError`` naming ``where``."""
    from trainable.model import module_tree

    try:
        return module_tree(model)
    except OSError as error:
        if looks_like_local_path(model):
            raise ConfigError(f"{where}: {error}") from None
        print(f"note: target modules not checked before the {before} start: {error}", file=sys.stderr)
        return None


def looks_like_local_path(model: str) -> bool:
    """A hub id is ``owner/name``; anything else (or anything that exists here) is a path."""
    return model.startswith((".", "/", "~")) or model.count("/") != 1 or Path(model).exists()


def check_writable_folder(path: str | Path, where: str) -> None:
    """``path`` is a folder, or can be made one: no file in the way, and its nearest existing
    parent is a folder this process may write in. Creates nothing."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{where}: {path} is a file, not a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{where}: {existing} is a file, so {path} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: no permission to write in {existing}")


def check_run_output_dir(path: str | Path, where: str = "output_dir") -> None:
    """A run's output folder: writable, and either absent, empty or an earlier run's
    (which the new run replaces when it succeeds). Any other folder is refused, so a typo
    such as ``--output-dir .`` cannot replace a folder of other files."""
    check_writable_folder(path, where)
    path = Path(path).absolute()
    if not path.is_dir():
        return
    foreign = sorted(entry.name for entry in path.iterdir() if not _is_run_output(entry.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(
            f"{where}: {path} holds files that are not a run's outputs ({shown}); a run replaces its "
            "output folder as a whole, so give a new or empty folder"
        )


def _is_run_output(name: str) -> bool:
    return name in RUN_OUTPUT_NAMES or name.endswith(RUN_OUTPUT_SUFFIXES)
