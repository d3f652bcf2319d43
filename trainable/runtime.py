"""What a run computes with besides its recipe and data: the model, its processor, what the
model can take, and where and in which precision it runs.

Built once per run (``load_runtime``) and handed to training and decoding, so the device's
autocast dtype and the model's input name are decided in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainable.data import ModelLimits, model_limits


@dataclass(frozen=True)
class Runtime:
    model: Any  # a transformers speech seq2seq model, or the peft model wrapping it
    processor: Any  # feature extractor + tokenizer
    limits: ModelLimits
    device: str  # "cpu", "cuda" or "mps"
    autocast: Any  # torch dtype to autocast to (bf16 on CUDA), or None: fp32
    input_name: str  # "input_values" (Moonshine) or "input_features" (Whisper)

    def autocast_context(self):
        """``torch.autocast`` to this runtime's dtype, or a context that changes nothing (fp32)."""
        from contextlib import nullcontext

        import torch

        return torch.autocast(device_type=self.device, dtype=self.autocast) if self.autocast is not None else nullcontext()

    def with_model(self, model: Any) -> "Runtime":
        """The same runtime around another model object (e.g. the model with its adapter)."""
        return dataclasses.replace(self, model=model)


def load_runtime(model_name_or_path: str, requested_device: str) -> Runtime:
    """Pick the device, load model and processor onto it, read the model's limits."""
    from trainable.model import load_model_and_processor, select_device

    device = select_device(requested_device)
    model, processor = load_model_and_processor(model_name_or_path, device)
    return runtime_for(model, processor, device)


def runtime_for(model: Any, processor: Any, device: str = "cpu") -> Runtime:
    """A runtime around a model already loaded (tests, benchmarks, demo scripts)."""
    from trainable.model import autocast_dtype

    return Runtime(model, processor, model_limits(model, processor), device, autocast_dtype(device), model.main_input_name)
