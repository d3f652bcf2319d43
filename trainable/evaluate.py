"""Greedy decoding of an utterance set and its WER report.

Decoding is batched over length-sorted utterances: batches of similar length waste
little compute on padding, and the order is restored before scoring.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Callable

from trainable.data import ModelLimits, UtteranceSet, audio_inputs
from trainable.wer import score_as_dict, score_corpus


def max_new_tokens_for(seconds: float, tokens_per_second: float, limits: ModelLimits) -> int:
    """Room for the longest plausible transcript of ``seconds`` of speech, within the decoder's limit.

    A fixed cap either truncates long utterances or lets a looping hypothesis run on for
    hundreds of tokens; scaling by the training data's token rate avoids both.
    """
    budget = int(math.ceil(seconds * tokens_per_second * 1.5)) + 10
    if limits.max_label_tokens:
        budget = min(budget, limits.max_label_tokens - 1)
    return max(budget, 1)


def transcribe(
    model,
    processor,
    utterances: UtteranceSet,
    limits: ModelLimits,
    *,
    device: str,
    batch_size: int,
    tokens_per_second: float,
    input_name: str,
    autocast=None,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Hypotheses in manifest order, decoded greedily in length-sorted batches."""
    import torch

    order = sorted(range(len(utterances)), key=lambda i: len(utterances.audio[i]))
    hypotheses: list[str] = [""] * len(order)
    was_training = model.training
    model.eval()
    amp = torch.autocast(device_type=device, dtype=autocast) if autocast is not None else nullcontext()
    with torch.inference_mode(), amp:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            audio = [utterances.audio[i] for i in batch]
            inputs = {k: v.to(device) for k, v in audio_inputs(processor, audio, limits, input_name).items()}
            longest = max(len(a) for a in audio) / limits.sampling_rate
            generated = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens_for(longest, tokens_per_second, limits),
                num_beams=1,
                do_sample=False,
            )
            texts = processor.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for index, text in zip(batch, texts):
                hypotheses[index] = text.strip()
            if progress:
                progress(len(batch))
    model.train(was_training)
    return hypotheses


def wer_report(utterances: UtteranceSet, hypotheses: list[str], system: str) -> dict:
    """The per-eval-set report: corpus WER both ways and every utterance's reference,
    hypothesis and edit counts, so nothing needs re-decoding to be re-scored."""
    references = [u.text for u in utterances.utterances]
    corpus, scores = score_corpus(references, hypotheses)
    rows = [
        {
            "id": u.id,
            "speaker": u.speaker,
            "audio": u.audio_path,
            "reference": u.text,
            "hypothesis": hypothesis,
            **score_as_dict(score),
        }
        for u, hypothesis, score in zip(utterances.utterances, hypotheses, scores)
    ]
    return {
        "eval_set": utterances.name,
        "system": system,
        "manifest": utterances.manifest,
        "manifest_sha256": utterances.manifest_sha256,
        **corpus,
        "skipped_rows": utterances.skipped,
        "utterances": rows,
    }
