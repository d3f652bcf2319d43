"""Load a speech seq2seq model and its processor, choose the device, attach a LoRA adapter."""

from __future__ import annotations

import logging
import os
import random
import sys
import warnings

log = logging.getLogger(__name__)


class DeviceError(RuntimeError):
    """The requested device is not available on this machine."""


def select_device(requested: str, cuda_available: bool | None = None, mps_available: bool | None = None) -> str:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error.

    The availability flags can be passed in so the choice is testable without the hardware.
    """
    if cuda_available is None or mps_available is None:
        import torch

        cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
        mps_backend = getattr(torch.backends, "mps", None)
        mps_available = bool(mps_backend and mps_backend.is_available()) if mps_available is None else mps_available
    if requested == "auto":
        return "cuda" if cuda_available else "mps" if mps_available else "cpu"
    if requested == "cuda" and not cuda_available:
        raise DeviceError("--device cuda: no CUDA device is visible (check CUDA_VISIBLE_DEVICES and the torch build)")
    if requested == "mps" and not mps_available:
        raise DeviceError(
            "--device mps: Apple MPS is not available here (needs macOS 12.3+ on Apple silicon and an MPS-enabled torch)"
        )
    if requested not in {"cpu", "cuda", "mps"}:
        raise DeviceError(f"--device {requested}: expected auto, cpu, cuda or mps")
    return requested


def autocast_dtype(device: str):
    """bf16 autocast where CUDA supports it; fp32 on mps and cpu (MPS half precision is unreliable for training)."""
    import torch

    if device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def seed_everything(seed: int) -> None:
    """One seed drives python, numpy and torch (LoRA init, dropout masks); data order has its own seeded RNG."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_model_and_processor(name_or_path: str, device: str = "cpu"):
    """Auto classes, so a hub id (UsefulSensors/moonshine-tiny) and a local directory
    (the bundled demo model) load the same way. Weights are loaded in float32 whatever
    they were saved in: fp16 on disk keeps the demo small, training needs fp32 masters."""
    import torch
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():  # like the run's own bars: none in Ray workers' logs or CI
        hf_logging.disable_progress_bar()
    local = os.path.isdir(name_or_path)
    if not local and os.environ.get("HF_HUB_OFFLINE") == "1":
        log.info("HF_HUB_OFFLINE=1: %s must be in the local Hugging Face cache", name_or_path)
    try:
        processor = AutoProcessor.from_pretrained(name_or_path)
        model = AutoModelForSpeechSeq2Seq.from_pretrained(name_or_path, dtype=torch.float32)
    except (OSError, ValueError) as error:  # ValueError: a folder without a model's config or processor files
        where = "local directory" if local else "hub id (no local directory of that name exists)"
        raise OSError(f"cannot load model '{name_or_path}' as a {where}: {error}") from error
    model.to(device)
    model.eval()
    return model, processor


def apply_lora(model, r: int, alpha: int, dropout: float, target_modules: tuple[str, ...], scope: str = "all"):
    """Wrap the model in a peft LoRA adapter; checks that the target modules exist first,
    so a typo ("qproj") fails with the names that would have worked. ``scope`` "encoder" or
    "decoder" adapts those modules in that half only (full module names are given to peft,
    because leaf names like ``q_proj`` occur in both halves)."""
    from peft import LoraConfig, get_peft_model

    check_target_modules(model, target_modules, scope)
    targets = list(target_modules) if scope == "all" else scoped_module_names(model, target_modules, scope)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def check_target_modules(model, target_modules: tuple[str, ...], scope: str = "all") -> None:
    """Every target module names layers of the model (in ``scope``'s half of it); a typo
    ("qproj") fails with the names that would have worked. Works on a model built on
    torch's meta device (``module_tree``), so a sweep checks before any trial starts."""
    available = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in target_modules if m not in available]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise ValueError(f"target_modules: {missing} not in the model; its linear layers are named {linear}")
    if scope != "all":
        scoped_module_names(model, target_modules, scope)


def module_tree(name_or_path: str):
    """The model's module structure without its weights: built from its config on torch's
    meta device, so checking target modules costs no download of weights and no memory."""
    import torch
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise OSError(f"cannot read the config of model '{name_or_path}': {error}") from error
    with torch.device("meta"):
        return AutoModelForSpeechSeq2Seq.from_config(config)


def scoped_module_names(model, target_modules: tuple[str, ...], scope: str) -> list[str]:
    """Full names of the target modules inside the model's encoder (or outside it: decoder)."""
    if not hasattr(model, "get_encoder"):
        raise ValueError(f"adapter_scope: {scope!r} needs an encoder-decoder model; {type(model).__name__} has no get_encoder()")
    in_encoder = {id(module) for module in model.get_encoder().modules()}
    names = [name for name, module in model.named_modules()
             if name.rsplit(".", 1)[-1] in target_modules and (id(module) in in_encoder) == (scope == "encoder")]
    if not names:
        raise ValueError(f"adapter_scope: none of target_modules {list(target_modules)} is in the model's {scope}")
    return names


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
