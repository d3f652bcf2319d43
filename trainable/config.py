"""The one recipe object of a run: built by the CLI or a YAML, passed unchanged into a
sweep trial or a repro seed, and written into every results row.

Standard library only, so ``--help`` and config validation never import torch or ray.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from trainable.config_io import ConfigError, coerce_bool, coerce_number, read_recipe, reject_unknown
from trainable.files import atomic_write_json
from trainable.manifest import ManifestError
from trainable.sources import DataSpec, default_name, resolve_spec

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


def target_module_set_name(modules: tuple[str, ...] | list[str]) -> str:
    """The set name ("qkvo") for a module tuple, or a comma list when it has none."""
    for name, members in TARGET_MODULE_SETS.items():
        if tuple(modules) == members:
            return name
    return ",".join(modules)


def parse_eval_manifest(value: str) -> tuple[str, str]:
    """``name=spec`` as on the command line (a manifest path or a dataset spec,
    ``trainable.sources``); a bare spec is named after its split, else its file stem."""
    name, sep, path = value.partition("=")
    if not sep or not re.fullmatch(r"[\w.+-]+", name.strip()):
        try:
            path, name = value, default_name(value)
        except ManifestError as error:
            raise ConfigError(f"eval_manifests: {error}") from None
    if not name or not path:
        raise ConfigError(f"eval_manifests: {value!r} is not NAME=PATH")
    return name.strip(), path.strip()


@dataclass(frozen=True)
class TrialConfig:
    """Everything that decides what a run computes. Two equal configs give the same result
    on the same device; the ``seed`` field is the only thing a repro run changes."""

    # What to adapt and on which data. A "manifest" here is any data spec: a manifest file
    # or a dataset (save_to_disk folder, parquet, audiofolder, Common Voice, hub id), so
    # recipes carry both alike (trainable.sources); train_dataset / eval_datasets are
    # accepted as other names of these two fields.
    model: str = field(default=DEMO_MODEL, metadata={"help": "hub id or local directory of a speech seq2seq model"})
    train_manifest: str = field(default=DEMO_TRAIN, metadata={"help": "training utterances: a manifest or a dataset spec"})
    eval_manifests: tuple[tuple[str, str], ...] = field(
        default=DEMO_EVALS, metadata={"help": "(name, manifest or dataset spec) pairs; the first is the one a sweep optimises"}
    )
    max_duration: float | None = field(default=None, metadata={"help": "drop utterances longer than this many seconds"})
    on_bad_row: OnBadRow = field(default="error", metadata={"help": "error: stop before training; skip: warn and count"})
    allow_overlap: bool = field(default=False, metadata={"help": "permit eval utterances that are also in training"})
    # Training labels with characters the tokenizer lacks become unknown tokens
    # (trainable.data_report): a warning above a small share, an error with strict_text.
    strict_text: bool = field(default=False, metadata={"help": "refuse training transcripts with characters the tokenizer maps to unknown"})
    text_normalize: bool = field(
        default=False, metadata={"help": "lower-case training labels and drop punctuation as the eval normaliser does"}
    )

    # The adapter.
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    # fc1/fc2 by default: on the bundled demo an fc-only adapter closes about as much of the
    # target-domain gap as q/k/v/o while costing the source-domain canary less
    # (data/demo/README.md has the figures). The real-model config
    # (sweeps/configs/moonshine_tiny.yaml) names its own set.
    target_modules: tuple[str, ...] = field(
        default=TARGET_MODULE_SETS["fc"], metadata={"help": "module names (or a set: qv, qkv, qkvo, qkvo+fc, fc)"}
    )

    # Decoder-only adapters leave the encoder frozen, so at batch size 1 its outputs are
    # computed once per utterance (1.4-1.8x faster steps, docs/benchmarks.md row E).
    adapter_scope: AdapterScope = field(
        default="all", metadata={"help": "where target_modules are adapted: all, encoder or decoder"}
    )

    # The optimisation. Demo-sized defaults; sweeps/configs/moonshine_tiny.yaml holds the
    # hand-run recipe for the real model (1600 steps at lr 1e-5).
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
    eval_every: int = field(default=0, metadata={"help": "score every eval set every N steps (0 = only at the end); a sweep stops trials early on these scores"})
    eval_batch_size: int = field(default=16, metadata={"help": "utterances per decoding batch"})

    output_dir: str = field(default="outputs/run", metadata={"help": "where adapter, processor and reports go"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", parse_target_modules(self.target_modules))
        object.__setattr__(self, "eval_manifests", tuple((str(n), str(p)) for n, p in self.eval_manifests))
        # Numbers are checked here, not only in from_dict, so a config built in code, by
        # ``replace`` or from Tune obeys the same rules: whole ints, finite floats.
        for name, kind in _FIELD_KINDS.items():
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _coerce(name, kind, getattr(self, name)))
        self._check_choices()
        self._check_ranges()
        self._check_data_specs()

    def _check_choices(self) -> None:
        for name, allowed in _LITERALS.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")

    def _check_ranges(self) -> None:
        for name, low in _LOWEST.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"{name}: must be >= {low:g}, got {value!r}")
        if self.seed > MAX_SEED:
            raise ConfigError(f"seed: must be at most {MAX_SEED} (results tables store it as a 64-bit integer), got {self.seed}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate: must be > 0, got {self.learning_rate!r}")
        if self.max_duration is not None and self.max_duration <= 0:
            raise ConfigError(f"max_duration: must be > 0 seconds, got {self.max_duration!r}")
        for name in ("model", "train_manifest", "output_dir"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(f"{name}: empty; give a path" + (" or a hub id" if name == "model" else ""))
        if not self.eval_manifests:
            raise ConfigError("eval_manifests: at least one NAME=PATH is needed to score baseline and tuned")
        names = [name for name, _ in self.eval_manifests]
        if len(set(names)) != len(names):
            raise ConfigError(f"eval_manifests: names must be unique, got {names}")

    def _check_data_specs(self) -> None:
        specs = [("train_manifest", self.train_manifest)] + [(f"eval_manifests.{n}", p) for n, p in self.eval_manifests]
        for name, spec in specs:
            try:
                DataSpec.parse(spec)
            except ManifestError as error:
                raise ConfigError(f"{name}: {error}") from None

    @property
    def primary_eval(self) -> str:
        """The eval set a sweep optimises and repro tests: the first one named."""
        return self.eval_manifests[0][0]

    def resolved(self, base: str | Path | None = None) -> "TrialConfig":
        """Absolute paths for model (when it is a local path), manifests, datasets and output dir.

        A relative path is taken against ``base`` (default: the working directory), and, for
        the bundled demo, against the repository root, so the defaults work from anywhere.
        Hub ids (model or dataset) stay as they are.
        """
        def data(spec: str) -> str:
            return resolve_spec(spec, lambda location: _resolve_path(location, base))

        return self.replace(
            model=_resolve_path(self.model, base, must_exist=True),
            train_manifest=data(self.train_manifest),
            eval_manifests=tuple((name, data(path)) for name, path in self.eval_manifests),
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
        values = _with_field_names(data)
        reject_unknown(values, (f.name for f in fields(cls)), noun="config field")
        if "eval_manifests" in values:
            values["eval_manifests"] = _coerce_eval_manifests(values["eval_manifests"])
        return cls(**values)  # __post_init__ coerces and checks every value

    def to_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_file(cls, path: str | Path) -> "TrialConfig":
        """From any recipe file: JSON, a sweep's best.json, a run's summary.json, a YAML
        with a ``trial:`` section (``trainable.config_io.read_recipe``)."""
        return cls.from_dict(read_recipe(path))


_LITERALS = {"device": get_args(Device), "lr_scheduler": get_args(Scheduler), "on_bad_row": get_args(OnBadRow),
             "adapter_scope": get_args(AdapterScope)}
# The smallest value each numeric field may take (num_threads: when given).
_LOWEST = {
    "lora_r": 1, "lora_alpha": 1, "max_steps": 1, "batch_size": 1, "gradient_accumulation_steps": 1,
    "eval_batch_size": 1, "num_threads": 1, "warmup_steps": 0, "eval_every": 0, "seed": 0,
    "weight_decay": 0.0, "max_grad_norm": 0.0,
}
MAX_SEED = 2**63 - 1  # the largest int64: seeds are a column of trials.parquet and scores.parquet
_FIELD_KINDS = {
    "lora_r": int, "lora_alpha": int, "max_steps": int, "batch_size": int, "gradient_accumulation_steps": int,
    "warmup_steps": int, "seed": int, "eval_every": int, "eval_batch_size": int, "num_threads": int,
    "lora_dropout": float, "learning_rate": float, "weight_decay": float, "max_grad_norm": float, "max_duration": float,
    "allow_overlap": bool, "strict_text": bool, "text_normalize": bool,
}
# Other names a recipe may use for a field: the data fields hold datasets as well as manifests.
FIELD_ALIASES = {"train_dataset": "train_manifest", "eval_datasets": "eval_manifests"}


def _with_field_names(data: dict[str, Any]) -> dict[str, Any]:
    values = dict(data)
    for alias, name in FIELD_ALIASES.items():
        if alias in values:
            if name in values:
                raise ConfigError(f"{alias} and {name} are one field; give only one of them")
            values[name] = values.pop(alias)
    return values


def _coerce(name: str, kind: type | None, value: Any) -> Any:
    """Values from YAML, the command line or Tune may be strings or numpy scalars."""
    if kind is None:
        return value
    if kind is bool:
        return coerce_bool(value, name)
    return coerce_number(value, kind, name)


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
