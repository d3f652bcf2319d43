"""Pretrain the demo's tiny Moonshine from scratch on the source-domain corpus, on CPU.

    python -m demo.pretrain --corpus data/demo/source --out data/demo/model --steps 2500

Cross-entropy on the decoder plus an auxiliary CTC loss on the encoder output: without
the CTC head a model this small had not learnt to align audio and text after 1200 steps;
with it, it does within ~1000. The head is dropped after pretraining, so the saved model
is a plain MoonshineForConditionalGeneration that the Auto classes open.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from pathlib import Path

from demo.model import build_model, build_processor

# Longest demo transcript is under 70 characters; one token per character, plus margin.
# Set as max_new_tokens (not max_length), so callers that pass their own budget, as the
# core does, override it without a warning.
MAX_NEW_TOKENS = 96


def warmup_cosine(warmup: int, total: int, floor: float = 0.05):
    """Learning-rate factor: linear warm-up, then cosine decay to ``floor`` of the peak."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def batch_losses(model, ctc_head, processor, utterances, batch: list[int], limits):
    """(decoder cross-entropy, encoder CTC) of one batch; CTC targets are the labels less EOS,
    with <pad> (id 0) as the blank."""
    import torch
    import torch.nn.functional as F

    from trainable.data import audio_inputs

    inputs = audio_inputs(processor, [utterances.audio[i] for i in batch], limits, "input_values")
    labels = [utterances.labels[i] for i in batch]
    padded = torch.full((len(labels), max(map(len, labels))), -100, dtype=torch.long)
    for row, ids in enumerate(labels):
        padded[row, : len(ids)] = torch.tensor(ids)
    output = model(**inputs, labels=padded)

    frames = torch.tensor([model.model.encoder._get_feat_extract_output_lengths(len(utterances.audio[i])) for i in batch])
    log_probs = ctc_head(output.encoder_last_hidden_state).float().log_softmax(-1).transpose(0, 1)
    targets = [torch.tensor(ids[:-1]) for ids in labels]
    ctc = F.ctc_loss(
        log_probs, torch.cat(targets), frames, torch.tensor([len(t) for t in targets]), blank=0, zero_infinity=True
    )
    return output.loss, ctc


def monitor(model, processor, sets: dict, rate: float) -> dict[str, float]:
    """WER on the monitoring sets (source and target domain)."""
    from demo.score import score_set
    from trainable.runtime import runtime_for

    runtime = runtime_for(model, processor)
    return {name: score_set(runtime, utterances, rate)["wer"] for name, utterances in sets.items()}


def monitor_line(wers: dict[str, float]) -> str:
    return "  ".join(f"{name} WER {100 * wer:.1f} %" for name, wer in wers.items())


def write_provenance(out: Path, corpus: Path, settings: dict, training_seconds: float, final_wers: dict) -> None:
    """Record which corpus (and so which voices) the model was pretrained on, beside its
    weights. The demo's canary only means "source domain" if its voices were in
    pretraining, and the target voices only mean "new domain" if they were not; a test
    checks both against this file, so a model and a corpus from different generator
    versions cannot be committed together unnoticed."""
    import hashlib

    manifest = corpus / "train.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    provenance = {
        "corpus_manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "utterances": len(rows),
        "hours": round(sum(row["duration"] for row in rows) / 3600, 2),
        "speakers": sorted({row["speaker"] for row in rows}),
        "settings": settings,
        "training_seconds": round(training_seconds),
        "final_monitor_wer": {name: round(wer, 4) for name, wer in final_wers.items()},
    }
    (out / "pretraining.json").write_text(json.dumps(provenance, indent=2) + "\n")


def save_model(model, processor, out: Path) -> None:
    """fp16 weights keep the committed bundle light (4 MB); config.json says float32, so
    ``from_pretrained`` with its default dtype ("auto") gives a float32 model."""
    import torch

    model.to(torch.float16).save_pretrained(out)
    processor.save_pretrained(out)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.to(torch.float32)


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m demo.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/demo/source"), help="folder written by demo.corpus")
    parser.add_argument("--out", type=Path, default=Path("data/demo/model"))
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="peak AdamW learning rate")
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--ctc-weight", type=float, default=0.5, help="weight of the auxiliary encoder CTC loss")
    parser.add_argument("--seed", type=int, default=0, help="model init and batch order")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=500, help="WER on the monitoring sets every N steps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from trainable.data import label_ids, model_limits, prepare_set, training_batches
    from trainable.pipeline import tokens_per_second

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    processor = build_processor()
    model = build_model(seed=args.seed)
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS
    limits = model_limits(model, processor)
    tokenize = partial(label_ids, processor.tokenizer, decoder_start_token_id=1, eos_token_id=2)
    train = prepare_set("source", str(args.corpus / "train.jsonl"), limits, tokenize=tokenize)
    rate = tokens_per_second(train, limits)
    monitors = {name: prepare_set(name, str(args.corpus / f"{name}.jsonl"), limits) for name in ("dev_source", "dev_target")}
    print(f"{len(train)} training utterances, {sum(map(len, train.audio)) / 16000 / 3600:.2f} h, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, loaded in {time.perf_counter() - started:.0f} s", flush=True)

    torch.manual_seed(args.seed)
    ctc_head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size)
    parameters = list(model.parameters()) + list(ctc_head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(args.warmup_steps, args.steps))
    batches = training_batches([len(a) for a in train.audio], args.batch_size, args.seed)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        model.train()
        epoch, _, batch = next(batches)
        cross_entropy, ctc = batch_losses(model, ctc_head, processor, train, batch, limits)
        loss = cross_entropy + args.ctc_weight * ctc
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        if step % args.log_every == 0:
            print(f"step {step} epoch {epoch} ce {cross_entropy.item():.3f} ctc {ctc.item():.3f} "
                  f"lr {schedule.get_last_lr()[0]:.2e} {time.perf_counter() - started:.0f} s", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            wers = monitor(model, processor, monitors, rate)
            print(f"step {step} {monitor_line(wers)}", flush=True)
    seconds = time.perf_counter() - started
    save_model(model, processor, args.out)
    settings = {k: v for k, v in vars(args).items() if k not in ("corpus", "out", "threads", "log_every", "eval_every")}
    write_provenance(args.out, args.corpus, settings, seconds, wers)
    print(f"saved {args.out} after {seconds:.0f} s of training", flush=True)


if __name__ == "__main__":
    main()
