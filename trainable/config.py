"""The one recipe object of a run: built by the CLI or a YAML, passed unchanged into a
sweep trial or a repro seed, and written into every results row.

Standard library only, so ``--help`` and config validation never import torch or ray.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

# Bundled demo (see data/demo/README.md): the defaults point here so a first command on a
# fresh clone needs no download and no arguments.
REPO_ROOT = Path(__file__).resolve().parent.parent
# Paths stay relative in the config (so best.json travels between machines) and are made
# absolute by ``resolved()`` on the driver, before Ray moves a trial into its own folder.
DEMO_DIR = "data/demo"
DEMO_MODEL = f"{DEMO_DIR}/model"
DEMO_TRAIN = f"{DEMO_DIR}/train.jsonl"
DEMO_EVALS = (("dev", f"{DEMO_DIR}/dev.jsonl"), ("canary", f"{DEMO_DIR}/canary.jsonl"))

Device = Literal["auto", "cpu", "cuda", "mps"]
Scheduler = Literal["linear", "cosine", "constant"]
OnBadRow = Literal["error", "skip"]
AdapterScope = Literal["all", "encoder", "decoder"]

# Short names for target-module sets, as a sweep's search space spells them.
TARGET_MODULE_SETS = {
    "qv": ("q_proj", "v_proj"),
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "qkvo": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qkvo+fc": ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"),
    "fc": ("fc1", "fc2"),
}


class ConfigError(ValueError):
    """A recipe field has a bad value; the message names the field."""


def parse_target_modules(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Accept a named set ("qkvo"), a comma list ("q_proj,v_proj") or a sequence."""
    if isinstance(value, (tuple, list)):
        modules = tuple(str(v).strip() for v in value)
    elif value in TARGET_MODULE_SETS:
        modules = TARGET_MODULE_SETS[value]
    else:
        modules = tuple(part.strip() for part in str(value).split(",") if part.strip())
    if not modules:
        raise ConfigError(f"target_modules: empty ({value!r}); name a set {sorted(TARGET_MODULE_SETS)} or modules like q_proj,v_proj")
    return modules


def parse_eval_manifest(value: str) -> tuple[str, str]:
    """``name=path`` as on the command line; a bare path takes its file stem as the name."""
    name, sep, path = value.partition("=")
    if not sep:
        path, name = value, Path(value).stem
    if not name or not path:
        raise ConfigError(f"eval_manifests: {value!r} is not NAME=PATH")
    return name.strip(), path.strip()


@dataclass(frozen=True)
class TrialConfig:
    """Everything that decides what a run computes. Two equal configs give the same result
    on the same device; the ``seed`` field is the only thing a repro run changes."""

    # What to adapt and on which data.
    model: str = field(default=DEMO_MODEL, metadata={"help": "hub id or local directory of a speech seq2seq model"})
    train_manifest: str = field(default=DEMO_TRAIN, metadata={"help": "manifest of training utterances"})
    eval_manifests: tuple[tuple[str, str], ...] = field(
        default=DEMO_EVALS, metadata={"help": "(name, path) pairs; the first is the one a sweep optimises"}
    )
    max_duration: float | None = field(default=None, metadata={"help": "drop utterances longer than this many seconds"})
    on_bad_row: OnBadRow = field(default="error", metadata={"help": "error: stop before training; skip: warn and count"})
    allow_overlap: bool = field(default=False, metadata={"help": "permit eval utterances that are also in training"})

    # The adapter.
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    # fc1/fc2 by default: on the bundled demo an fc-only adapter closed as much of the
    # target-domain gap as q/k/v/o (-33 % vs -35 % held-out WER, 3 seeds) while costing the
    # source domain less (+1.8 vs +2.7 canary points); data/demo/README.md has the figures.
    # The real-model config (sweeps/configs/moonshine_tiny.yaml) names its own set.
    target_modules: tuple[str, ...] = field(
        default=TARGET_MODULE_SETS["fc"], metadata={"help": "module names (or a set: qv, qkv, qkvo, qkvo+fc, fc)"}
    )

    # Decoder-only adapters leave the encoder frozen, so at batch size 1 its outputs are
    # computed once per utterance (1.4-1.8x faster steps, docs/benchmarks.md row E).
    adapter_scope: AdapterScope = field(
        default="all", metadata={"help": "where target_modules are adapted: all, encoder or decoder"}
    )

    # The optimisation. Demo-sized defaults; sweeps/configs/moonshine_tiny.yaml has the old recipe.
    learning_rate: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    max_steps: int = field(default=300, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=8, metadata={"help": "utterances per forward pass"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "forward passes per optimiser step"})
    warmup_steps: int = field(default=20, metadata={"help": "linear warm-up steps"})
    lr_scheduler: Scheduler = field(default="linear", metadata={"help": "decay after warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})

    # Reproducibility and hardware.
    seed: int = field(default=42, metadata={"help": "drives LoRA init, data order, dropout, torch/numpy/python"})
    device: Device = field(default="auto", metadata={"help": "auto picks cuda, then mps, then cpu"})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)"})

    # Evaluation.
    eval_every: int = field(default=0, metadata={"help": "score the first eval set every N steps (0 = only at the end)"})
    eval_batch_size: int = field(default=16, metadata={"help": "utterances per decoding batch"})

    output_dir: str = field(default="outputs/run", metadata={"help": "where adapter, processor and reports go"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", parse_target_modules(self.target_modules))
        object.__setattr__(self, "eval_manifests", tuple((str(n), str(p)) for n, p in self.eval_manifests))
        self._check_choices()
        self._check_ranges()

    def _check_choices(self) -> None:
        for name, allowed in _LITERALS.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")

    def _check_ranges(self) -> None:
        positive = ("lora_r", "lora_alpha", "max_steps", "batch_size", "gradient_accumulation_steps", "eval_batch_size")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate: must be > 0, got {self.learning_rate!r}")
        if self.warmup_steps < 0 or self.eval_every < 0 or self.max_grad_norm < 0:
            raise ConfigError("warmup_steps, eval_every and max_grad_norm must be >= 0")
        if self.max_duration is not None and self.max_duration <= 0:
            raise ConfigError(f"max_duration: must be > 0 seconds, got {self.max_duration!r}")
        if not self.eval_manifests:
            raise ConfigError("eval_manifests: at least one NAME=PATH is needed to score baseline and tuned")
        names = [name for name, _ in self.eval_manifests]
        if len(set(names)) != len(names):
            raise ConfigError(f"eval_manifests: names must be unique, got {names}")

    @property
    def primary_eval(self) -> str:
        """The eval set a sweep optimises and repro tests: the first one named."""
        return self.eval_manifests[0][0]

    def resolved(self, base: str | Path | None = None) -> "TrialConfig":
        """Absolute paths for model (when it is a local path), manifests and output dir.

        A relative path is taken against ``base`` (default: the working directory), and, for
        the bundled demo, against the repository root, so the defaults work from anywhere.
        """
        return self.replace(
            model=_resolve_path(self.model, base, must_exist=True),
            train_manifest=_resolve_path(self.train_manifest, base),
            eval_manifests=tuple((name, _resolve_path(path, base)) for name, path in self.eval_manifests),
            output_dir=_resolve_path(self.output_dir, base, prefer_repo=False),
        )

    def replace(self, **changes: Any) -> "TrialConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists, so the dict round-trips through ``from_dict``."""
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        data["eval_manifests"] = [list(pair) for pair in self.eval_manifests]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrialConfig":
        """Build from JSON/YAML/Tune values; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if "eval_manifests" in values:
            values["eval_manifests"] = _coerce_eval_manifests(values["eval_manifests"])
        for f in fields(cls):
            if f.name in values and values[f.name] is not None:
                values[f.name] = _coerce(f.name, _FIELD_KINDS.get(f.name), values[f.name])
        return cls(**values)

    def to_json(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> "TrialConfig":
        data = json.loads(Path(path).read_text())
        # best.json from a sweep nests the config beside its scores.
        return cls.from_dict(data.get("config", data))


_LITERALS = {"device": get_args(Device), "lr_scheduler": get_args(Scheduler), "on_bad_row": get_args(OnBadRow),
             "adapter_scope": get_args(AdapterScope)}
_FIELD_KINDS = {
    "lora_r": int, "lora_alpha": int, "max_steps": int, "batch_size": int, "gradient_accumulation_steps": int,
    "warmup_steps": int, "seed": int, "eval_every": int, "eval_batch_size": int, "num_threads": int,
    "lora_dropout": float, "learning_rate": float, "weight_decay": float, "max_grad_norm": float, "max_duration": float,
    "allow_overlap": bool,
}


def _coerce(name: str, kind: type | None, value: Any) -> Any:
    """Values from YAML, the command line or Tune may be strings or numpy scalars."""
    if kind is None:
        return value
    try:
        if kind is bool and isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(value)
            return lowered in {"true", "1", "yes"}
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(float(value)) if kind is int and isinstance(value, str) else kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}") from None


def _coerce_eval_manifests(value: Any) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        return tuple((str(k), str(v)) for k, v in value.items())
    pairs = []
    for item in value:
        pairs.append(parse_eval_manifest(item) if isinstance(item, str) else (str(item[0]), str(item[1])))
    return tuple(pairs)


def _resolve_path(value: str, base: str | Path | None, must_exist: bool = False, prefer_repo: bool = True) -> str:
    """``must_exist``: a model name that is no local path stays as it is (a hub id)."""
    path = Path(value).expanduser()
    if path.is_absolute() or "://" in value:
        return value
    here = Path(base or os.getcwd()) / path
    if here.exists() or not prefer_repo:
        return str(here.resolve()) if here.exists() else str(here.absolute())
    in_repo = REPO_ROOT / path
    if in_repo.exists():
        return str(in_repo)
    return value if must_exist else str(here.absolute())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write then rename, so a crash never leaves a half-written result file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
