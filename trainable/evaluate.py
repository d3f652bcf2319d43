"""Greedy decoding of an utterance set and its WER report.

Decoding is batched over length-sorted utterances: batches of similar length waste
little compute on padding, and the order is restored before scoring.
"""

from __future__ import annotations

import math
from typing import Callable

from trainable.data import ModelLimits, UtteranceSet, audio_inputs
from trainable.error_analysis import compare_systems, confusion_pairs, speaker_wers
from trainable.runtime import Runtime
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
    runtime: Runtime,
    utterances: UtteranceSet,
    *,
    batch_size: int,
    tokens_per_second: float,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Hypotheses in manifest order, decoded greedily in length-sorted batches."""
    import torch

    model, limits = runtime.model, runtime.limits
    order = sorted(range(len(utterances)), key=lambda i: len(utterances.audio[i]))
    hypotheses: list[str] = [""] * len(order)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), runtime.autocast_context():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            audio = [utterances.audio[i] for i in batch]
            budgets = [max_new_tokens_for(len(a) / limits.sampling_rate, tokens_per_second, limits) for a in audio]
            generated = model.generate(
                **encode_each(runtime, audio),
                max_new_tokens=max(budgets), num_beams=1, do_sample=False,
                logits_processor=_own_budgets(budgets, model.generation_config.eos_token_id),
            )
            texts = runtime.processor.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for index, text in zip(batch, texts):
                hypotheses[index] = text.strip()
            if progress:
                progress(len(batch))
    model.train(was_training)
    return hypotheses


def encode_each(runtime: Runtime, audio) -> dict:
    """``generate`` inputs whose encoder outputs are those of each utterance alone.

    Moonshine's encoder normalises over the whole padded input (GroupNorm), so a padded
    batch would change every utterance's encoding with its batch-mates' lengths, and with
    it the hypotheses. Encoding one by one and padding the encoder *outputs* (masked in
    cross-attention) keeps the decoder's many small steps batched while every utterance
    gets exactly its own encoding. Models whose encoder output carries no mask fall back
    to the padded batch unless all outputs have the same length (Whisper's fixed window).
    """
    import torch

    model = runtime.model

    def inputs_of(clips):
        inputs = audio_inputs(runtime.processor, clips, runtime.limits, runtime.input_name)
        return {k: v.to(runtime.device) for k, v in inputs.items()}

    if len(audio) == 1:
        return inputs_of(audio)
    outputs = [model.get_encoder()(**inputs_of([clip])) for clip in audio]
    lengths = [o.last_hidden_state.shape[1] for o in outputs]
    masks = [getattr(o, "attention_mask", None) for o in outputs]
    if len(set(lengths)) == 1 and all(m is None for m in masks):
        return {"encoder_outputs": type(outputs[0])(last_hidden_state=torch.cat([o.last_hidden_state for o in outputs]))}
    if any(m is None for m in masks):
        return inputs_of(audio)
    first = outputs[0].last_hidden_state
    hidden = first.new_zeros(len(outputs), max(lengths), first.shape[-1])
    mask = masks[0].new_zeros(len(outputs), max(lengths))
    for row, (output, length) in enumerate(zip(outputs, lengths)):
        hidden[row, :length] = output.last_hidden_state[0]
        mask[row, :length] = output.attention_mask[0]
    return {"encoder_outputs": type(outputs[0])(last_hidden_state=hidden, attention_mask=mask)}


def _own_budgets(budgets: list[int], eos_token_id):
    """Each row stops at its own utterance's token budget (by a forced EOS, which decoding
    drops), not at the longest batch-mate's: a looping hypothesis is as long as decoding
    the utterance alone makes it, whichever batch it lands in."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    eos = eos_token_id[0] if isinstance(eos_token_id, (list, tuple)) else eos_token_id
    if eos is None or len(set(budgets)) == 1:
        return LogitsProcessorList()
    limits = torch.tensor(budgets)

    class OwnBudget(LogitsProcessor):
        prompt: int | None = None

        def __call__(self, input_ids, scores):
            self.prompt = input_ids.shape[1] if self.prompt is None else self.prompt
            spent = limits.to(scores.device) <= input_ids.shape[1] - self.prompt
            if spent.any():
                scores[spent] = torch.finfo(scores.dtype).min
                scores[spent, eos] = 0.0
            return scores

    return LogitsProcessorList([OwnBudget()])


def corpus_wer_of(utterances: UtteranceSet, hypotheses: list[str]) -> float:
    """The set's corpus WER alone: what a mid-training eval reports (the full report, with its
    speaker table and alignments, is built once, after training)."""
    return score_corpus([u.text for u in utterances.utterances], hypotheses)[0]["wer"]


def wer_report(utterances: UtteranceSet, hypotheses: list[str], system: str, baseline: dict | None = None) -> dict:
    """The per-eval-set report: corpus WER both ways and CER, WER per speaker, the most
    frequent substitutions, and every utterance's reference, hypothesis and edit counts, so
    nothing needs re-decoding to be re-scored. Given the ``baseline`` report of the same set,
    a tuned report also says which words the adapter fixed and broke, speaker by speaker."""
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
    report = {
        "eval_set": utterances.name,
        "system": system,
        "manifest": utterances.manifest,
        "manifest_sha256": utterances.manifest_sha256,
        **corpus,
        "skipped_rows": utterances.skipped,
        "speakers": speaker_wers(rows),
        "confusion_pairs": confusion_pairs(zip(references, hypotheses)),
        "utterances": rows,
    }
    if baseline is not None:
        report["compared_with_baseline"] = compare_systems(baseline, report)
    return report
