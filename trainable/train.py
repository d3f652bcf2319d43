"""The LoRA training loop: AdamW, warm-up + schedule, accumulation, clipping, resumable.

Kept apart from evaluation and I/O so it reads top to bottom. Its whole state (adapter,
optimiser, schedule, data position, RNG) fits in one checkpoint directory, which is how
a Ray trial that was stopped or lost continues where it was.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from trainable.config import TrialConfig
from trainable.data import UtteranceSet, audio_inputs, training_batches
from trainable.files import atomic_output, atomic_write_json
from trainable.runtime import Runtime

log = logging.getLogger(__name__)

# A run whose losses are non-finite this many optimiser steps in a row is diverging, not unlucky.
MAX_CONSECUTIVE_NONFINITE = 20
# In a checkpoint directory: the TrainState (step, data position, losses) as JSON.
TRAIN_STATE_FILE = "train_state.json"
# Kept encoder outputs (decoder-only adapters, see EncoderCache) stop growing at this size.
ENCODER_CACHE_BYTES = 2 * 1024**3


class NonFiniteLossError(FloatingPointError):
    """Training diverged: losses stayed NaN/inf; lower the learning rate."""


@dataclass
class TrainState:
    """Where training is: what a checkpoint saves and a resumed run restores."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    nonfinite_steps: int = 0
    losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0


def build_optimizer(model, config: TrialConfig):
    import torch
    from transformers import get_scheduler

    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = get_scheduler(
        config.lr_scheduler if config.lr_scheduler != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=min(config.warmup_steps, config.max_steps),
        num_training_steps=config.max_steps,
    )
    return optimizer, scheduler


def pad_labels(labels: list[list[int]]):
    """-100 marks padding so the loss ignores it."""
    import torch

    longest = max(len(x) for x in labels)
    out = torch.full((len(labels), longest), -100, dtype=torch.long)
    for row, ids in enumerate(labels):
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def batch_loss(runtime: Runtime, train_set: UtteranceSet, batch: list[int], encoder_cache: "EncoderCache | None" = None):
    """Mean cross-entropy of the decoder on one batch of training utterances."""
    model, device = runtime.model, runtime.device
    inputs = audio_inputs(runtime.processor, [train_set.audio[i] for i in batch], runtime.limits, runtime.input_name)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    labels = pad_labels([train_set.labels[i] for i in batch]).to(device)
    with runtime.autocast_context():
        if encoder_cache is not None:
            encoded = encoder_cache.outputs(model, batch, inputs)
            return model(attention_mask=inputs.get("attention_mask"), encoder_outputs=encoded, labels=labels).loss.float()
        return model(**inputs, labels=labels).loss.float()


class EncoderCache:
    """Encoder outputs of training utterances, computed once and reused every epoch.

    With decoder-only adapters the encoder is frozen and deterministic, so its output for
    an utterance never changes: recomputing it every step is pure waste (about half the
    forward pass of moonshine-tiny on 6-s clips). Only valid at batch size 1 (see
    ``encoder_cache_applies``). Outputs beyond ``max_bytes`` are recomputed, not kept.
    """

    def __init__(self, max_bytes: int = ENCODER_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.kept: dict[tuple[int, ...], object] = {}
        self.hits = 0

    def outputs(self, model, batch: list[int], inputs: dict):
        import torch

        key = tuple(batch)
        if key in self.kept:
            self.hits += 1
            return self.kept[key]
        with torch.no_grad():
            encoded = model.get_encoder()(**inputs)
        size = sum(t.numel() * t.element_size() for t in encoded.values() if isinstance(t, torch.Tensor))
        if self.bytes + size <= self.max_bytes:
            self.kept[key] = encoded
            self.bytes += size
        return encoded


def encoder_cache_applies(model, batch_size: int) -> bool:
    """True when the encoder's output depends on the audio alone: nothing in it trains, no
    dropout, layer-drop or SpecAugment in it, and batches of one utterance (in a padded
    batch, Moonshine's GroupNorm statistics depend on the padding, so an utterance's
    encoding changes with its batch-mates)."""
    from torch.nn.modules.dropout import _DropoutNd

    get_encoder = getattr(model, "get_encoder", None)
    encoder = get_encoder() if callable(get_encoder) else None
    if batch_size != 1 or encoder is None or any(p.requires_grad for p in encoder.parameters()):
        return False
    if getattr(model.config, "apply_spec_augment", False):
        return False
    for module in encoder.modules():
        if isinstance(module, _DropoutNd) and module.p > 0:
            return False
        if any(_positive(getattr(module, name, None)) for name in ("attention_dropout", "dropout", "activation_dropout", "layerdrop")):
            return False
    return True


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def train(
    runtime: Runtime,
    train_set: UtteranceSet,
    config: TrialConfig,
    *,
    on_eval: Callable[[TrainState, Callable[[Path], None]], None] | None = None,
    resume_from: str | None = None,
    progress=None,
) -> TrainState:
    """Run ``config.max_steps`` optimiser steps; every ``config.eval_every`` steps call
    ``on_eval(state, save_checkpoint)`` so the caller can score and checkpoint."""
    import torch

    model = runtime.model
    optimizer, scheduler = build_optimizer(model, config)
    state = TrainState()
    if resume_from:
        state = load_checkpoint(resume_from, model, optimizer, scheduler)
        log.info("resumed from %s at step %d", resume_from, state.step)
    lengths = [len(a) for a in train_set.audio]
    stream = training_batches(lengths, config.batch_size, config.seed, start_epoch=state.epoch)
    for _ in range(state.batch_in_epoch):
        next(stream)
    parameters = [p for p in model.parameters() if p.requires_grad]
    encoder_cache = EncoderCache() if encoder_cache_applies(model, config.batch_size) else None
    if encoder_cache:
        log.info("encoder is frozen and deterministic: its outputs are computed once per utterance")
    consecutive_nonfinite = 0
    model.train()
    started = time.perf_counter() - state.train_seconds
    while state.step < config.max_steps:
        optimizer.zero_grad(set_to_none=True)
        step_loss, finite_batches = 0.0, 0
        for _ in range(config.gradient_accumulation_steps):
            epoch, index, batch = next(stream)
            state.epoch, state.batch_in_epoch = epoch, index + 1
            loss = batch_loss(runtime, train_set, batch, encoder_cache=encoder_cache)
            if not torch.isfinite(loss):
                continue
            (loss / config.gradient_accumulation_steps).backward()
            step_loss += loss.item()
            finite_batches += 1
        grad_norm = _clip(parameters, config.max_grad_norm)
        if finite_batches == 0 or not math.isfinite(grad_norm):
            state.nonfinite_steps += 1
            consecutive_nonfinite += 1
            if consecutive_nonfinite >= MAX_CONSECUTIVE_NONFINITE:
                raise NonFiniteLossError(
                    f"loss or gradients were NaN/inf for {consecutive_nonfinite} steps in a row at step {state.step} "
                    f"(learning_rate={config.learning_rate}); lower the learning rate or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
        else:
            consecutive_nonfinite = 0
            optimizer.step()
            state.losses.append(step_loss / finite_batches)
        _advance(scheduler)
        state.step += 1
        state.train_seconds = time.perf_counter() - started
        if progress:
            progress(state, scheduler.get_last_lr()[0])
        if on_eval and config.eval_every and state.step % config.eval_every == 0 and state.step < config.max_steps:
            paused = time.perf_counter()
            on_eval(state, lambda directory: save_checkpoint(directory, model, optimizer, scheduler, state))
            model.train()
            started += time.perf_counter() - paused  # train_seconds (and steps/s) count training only
    return state


def _advance(scheduler) -> None:
    """One step of the learning-rate schedule, also after a skipped (non-finite) step, so the
    schedule follows the step count. Torch warns when that happens before any optimizer step;
    the run already reports the skip (nonfinite_steps), so the warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
        scheduler.step()


def _clip(parameters, max_norm: float) -> float:
    import torch

    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(parameters, max_norm))
    norms = [p.grad.detach().norm() for p in parameters if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


def save_checkpoint(directory: Path, model, optimizer, scheduler, state: TrainState) -> None:
    """Adapter weights, optimiser, schedule, data position and every RNG: enough to continue exactly."""
    import torch
    from peft import get_peft_model_state_dict

    directory = Path(directory)
    with atomic_output(directory / "training_state.pt") as tmp:
        torch.save(
            {
                "adapter": get_peft_model_state_dict(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": np.random.get_state(),
                "python_rng": random.getstate(),
            },
            tmp,
        )
    atomic_write_json(directory / TRAIN_STATE_FILE, state.__dict__)


def load_checkpoint(directory: str, model, optimizer, scheduler) -> TrainState:
    import torch
    from peft import set_peft_model_state_dict

    directory = Path(directory)
    saved = torch.load(directory / "training_state.pt", weights_only=False)
    set_peft_model_state_dict(model, saved["adapter"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    np.random.set_state(saved["numpy_rng"])
    random.setstate(saved["python_rng"])
    return TrainState(**_train_state(directory))


def _train_state(directory: Path) -> dict:
    return json.loads((directory / TRAIN_STATE_FILE).read_text())


def checkpoint_step(directory: str | Path | None) -> int:
    """The step a checkpoint directory was saved at (what a run resumed from it starts
    from); 0 without a directory or a readable train state in it."""
    if not directory:
        return 0
    try:
        return int(_train_state(Path(directory)).get("step", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0
