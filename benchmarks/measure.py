"""The timed pieces of the trial benchmark. Each returns seconds (or bytes) for two ways of
doing the same work, measured back to back in this process, so a ratio survives a machine
whose other tenants come and go.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from trainable.data import UtteranceSet, audio_inputs
from trainable.runtime import Runtime
from trainable.train import batch_loss, pad_labels

# Wall time by default. benchmarks.trial switches to process time when torch runs one
# thread: then CPU seconds equal wall time on an idle machine, and other tenants of a shared
# one barely move them. With more threads CPU time would add up every thread's.
clock = time.perf_counter

QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class Bench:
    """A LoRA model (in its runtime) and its decoded, tokenised utterances, ready to time."""

    runtime: Runtime
    train_set: UtteranceSet
    eval_set: UtteranceSet

    @property
    def model(self):
        return self.runtime.model

    @property
    def processor(self):
        return self.runtime.processor

    @property
    def limits(self):
        return self.runtime.limits

    @property
    def input_name(self) -> str:
        return self.runtime.input_name


def load_bench(model_dir: str, train_manifest: str, eval_manifest: str, *, decoder_only: bool = False, seed: int = 0, device: str = "cpu") -> Bench:
    """Load, prepare and attach LoRA exactly as ``train_and_evaluate`` does (r 8, alpha 16,
    dropout 0.05, the hand-run workflow's adapter)."""
    from trainable.config import TrialConfig
    from trainable.model import apply_lora, seed_everything
    from trainable.pipeline import load_utterance_sets
    from trainable.runtime import load_runtime

    config = TrialConfig(model=model_dir, train_manifest=train_manifest, eval_manifests=(("heldout", eval_manifest),))
    runtime = load_runtime(model_dir, device)
    train_set, (eval_set,) = load_utterance_sets(config, runtime)
    seed_everything(seed)
    # decoder_only: TrialConfig(adapter_scope="decoder"), q/k/v/o of self- and cross-attention.
    model = apply_lora(runtime.model, 8, 16, 0.05, QKVO, scope="decoder" if decoder_only else "all")
    model.train()
    return Bench(runtime.with_model(model), train_set, eval_set)


def subset(utterances: UtteranceSet, indices) -> UtteranceSet:
    indices = [int(i) for i in indices]
    return UtteranceSet(
        utterances.name, utterances.manifest, utterances.manifest_sha256,
        [utterances.utterances[i] for i in indices], [utterances.audio[i] for i in indices],
        [utterances.audio_hashes[i] for i in indices], [utterances.labels[i] for i in indices] if utterances.labels else [],
    )


def sorted_batches(lengths, batch_size: int) -> list[list[int]]:
    """Length-sorted batches: the least padding any batching of these utterances can have."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def random_batches(count: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    order = [int(i) for i in np.random.default_rng(seed).permutation(count)]
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


def padded_fraction(lengths, batches) -> float:
    """Share of the samples the model sees that are padding."""
    real = sum(lengths[i] for batch in batches for i in batch)
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1 - real / padded


def prebuilt(bench: Bench, batches) -> list[tuple[dict, object]]:
    """Model inputs built before the clock starts: the floor is the model's compute alone."""
    out = []
    for batch in batches:
        inputs = audio_inputs(bench.processor, [bench.train_set.audio[i] for i in batch], bench.limits, bench.input_name)
        out.append((inputs, pad_labels([bench.train_set.labels[i] for i in batch])))
    return out


def bare_pass(model, inputs: dict, labels) -> float:
    """One forward + backward and nothing else (no optimiser, clipping or schedule)."""
    start = clock()
    model(**inputs, labels=labels).loss.backward()
    seconds = clock() - start
    model.zero_grad(set_to_none=True)
    return seconds


def floor_seconds(bench: Bench, indices, batch_size: int) -> float:
    """Bare forward+backward time of these training utterances at ``batch_size``."""
    lengths = [len(bench.train_set.audio[i]) for i in indices]
    batches = [[indices[j] for j in batch] for batch in sorted_batches(lengths, batch_size)]
    return sum(bare_pass(bench.model, inputs, labels) for inputs, labels in prebuilt(bench, batches))


def best_batch_size(bench: Bench, indices, sizes=(1, 2, 4, 8)) -> tuple[int, dict[int, float]]:
    """The batch size with the fastest bare pass per utterance on a sample, sizes interleaved."""
    seconds = {size: 0.0 for size in sizes}
    for _ in range(2):
        for size in sizes:
            seconds[size] += floor_seconds(bench, indices, size)
    per_utterance = {size: s / (2 * len(indices)) for size, s in seconds.items()}
    return min(per_utterance, key=per_utterance.get), per_utterance


def batching_seconds(bench: Bench, indices, batch_size: int, seed: int = 0) -> dict:
    """P3: a training pass (features, labels, forward, backward) over the same utterances in
    length-bucketed vs random batches, batch by batch in turn."""
    from trainable.data import length_bucketed_batches

    lengths = [len(bench.train_set.audio[i]) for i in indices]
    kinds = {
        "bucketed": length_bucketed_batches(lengths, batch_size, np.random.default_rng(seed)),
        "random": random_batches(len(indices), batch_size, seed),
    }
    seconds = {kind: 0.0 for kind in kinds}
    for position in range(max(len(b) for b in kinds.values())):
        for kind in (("bucketed", "random") if position % 2 == 0 else ("random", "bucketed")):
            if position < len(kinds[kind]):
                batch = [indices[j] for j in kinds[kind][position]]
                seconds[kind] += _training_pass(bench, batch)
    return {"seconds": seconds, "count": len(indices), "padded": {kind: padded_fraction(lengths, batches) for kind, batches in kinds.items()}}


def _training_pass(bench: Bench, batch: list[int], encoder_cache=None) -> float:
    start = clock()
    loss = batch_loss(bench.runtime, bench.train_set, batch, encoder_cache=encoder_cache)
    loss.backward()
    seconds = clock() - start
    bench.model.zero_grad(set_to_none=True)
    return seconds


def encoder_cache_seconds(bench: Bench, indices, repeats: int = 3) -> dict:
    """Decoder-only LoRA at batch 1: a step with the encoder recomputed vs with its cached
    output, and the one-off cost of filling the cache. Steps are short, so each utterance's
    two kinds are timed in turn ``repeats`` times and the fastest of each kept: the least
    disturbed by other processes."""
    from trainable.train import EncoderCache, encoder_cache_applies

    assert encoder_cache_applies(bench.model, 1), "the encoder must be frozen and deterministic"
    cache = EncoderCache()
    fill = sum(_training_pass(bench, [i], cache) for i in indices)  # first epoch: encoder runs once
    seconds = {"recomputed": 0.0, "cached": 0.0}
    for i in indices:
        fastest = {kind: float("inf") for kind in seconds}
        for _ in range(repeats):
            for kind in seconds:
                fastest[kind] = min(fastest[kind], _training_pass(bench, [i], cache if kind == "cached" else None))
        for kind in seconds:
            seconds[kind] += fastest[kind]
    return {"seconds": seconds, "first_epoch": fill, "count": len(indices)}


def decoding_seconds(bench: Bench, batch_size: int, tokens_per_second: float) -> dict:
    """P2: greedy decoding of the eval set in length-sorted batches vs one utterance at a
    time, chunk by chunk in turn; also how many hypotheses the two agree on."""
    from trainable.evaluate import transcribe

    order = sorted(range(len(bench.eval_set)), key=lambda i: len(bench.eval_set.audio[i]))
    seconds = {"batched": 0.0, "single": 0.0}
    hypotheses = {"batched": [], "single": []}
    for position, start in enumerate(range(0, len(order), batch_size)):
        chunk = subset(bench.eval_set, order[start : start + batch_size])
        for kind in (("batched", "single") if position % 2 == 0 else ("single", "batched")):
            began = clock()
            hypotheses[kind] += transcribe(
                bench.runtime, chunk, batch_size=batch_size if kind == "batched" else 1, tokens_per_second=tokens_per_second,
            )
            seconds[kind] += clock() - began
    agree = sum(a == b for a, b in zip(hypotheses["batched"], hypotheses["single"]))
    return {"seconds": seconds, "agree": agree, "count": len(order)}


def matmul_rate(device: str, dtype_name: str = "bfloat16", size: int = 8192, seconds: float = 2.0) -> float:
    """P5: the device's measured dense matmul rate (FLOP/s), the ceiling for achieved FLOP/s."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    torch.cuda.synchronize()
    return 2 * size**3 * count / (time.perf_counter() - start)


def training_flops(bench: Bench, indices, batch_size: int) -> float:
    """FLOPs of forward+backward over these utterances, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    lengths = [len(bench.train_set.audio[i]) for i in indices]
    batches = [[indices[j] for j in batch] for batch in sorted_batches(lengths, batch_size)]
    counter = FlopCounterMode(display=False)
    device = next(bench.model.parameters()).device
    with counter:
        for inputs, labels in prebuilt(bench, batches):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            bench.model(**inputs, labels=labels.to(device)).loss.backward()
            bench.model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())
