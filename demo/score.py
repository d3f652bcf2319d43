"""Score a saved demo model on manifests: corpus WER overall and per speaker.

    python -m demo.score data/demo/dev.jsonl data/demo/test.jsonl data/demo/canary.jsonl

How the pretrained model's numbers in data/demo/README.md were measured, and what the
pretraining script prints as it goes. Decoding and scoring are the core's own
(trainable.evaluate, trainable.wer), so the numbers match a trainable.run baseline.
"""

from __future__ import annotations

import argparse
from collections import defaultdict


def score_set(runtime, utterances, tokens_per_second: float, batch_size: int = 16) -> dict:
    """Greedy-decode a prepared utterance set; corpus WER overall and per speaker."""
    from trainable.evaluate import transcribe
    from trainable.wer import corpus_wer, score_corpus

    hypotheses = transcribe(runtime, utterances, batch_size=batch_size, tokens_per_second=tokens_per_second)
    overall, scores = score_corpus([u.text for u in utterances.utterances], hypotheses)
    by_speaker = defaultdict(list)
    for utterance, score in zip(utterances.utterances, scores):
        by_speaker[utterance.speaker].append(score)
    return {
        "wer": overall["wer"],
        "ref_words": overall["ref_words"],
        "speakers": {speaker: corpus_wer(group)["wer"] for speaker, group in sorted(by_speaker.items())},
        "hypotheses": hypotheses,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.score", description="Corpus WER of a saved model on manifests, overall and per speaker.")
    parser.add_argument("manifests", nargs="+", help="JSONL manifests to score")
    parser.add_argument("--model", default="data/demo/model", help="directory saved with save_pretrained")
    parser.add_argument(
        "--train-manifest", default="data/demo/train.jsonl",
        help="its fastest token rate bounds the decoding length, as in trainable.run",
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from trainable.data import label_ids, prepare_set
    from trainable.pipeline import tokens_per_second
    from trainable.runtime import load_runtime

    torch.set_num_threads(args.threads)
    runtime = load_runtime(args.model, "cpu")
    model, limits = runtime.model, runtime.limits
    tokenize = lambda text: label_ids(runtime.processor.tokenizer, text, model.config.decoder_start_token_id, model.config.eos_token_id)  # noqa: E731
    rate = tokens_per_second(prepare_set("train", args.train_manifest, limits, tokenize=tokenize), limits)
    for manifest in args.manifests:
        utterances = prepare_set(manifest, manifest, limits)
        result = score_set(runtime, utterances, rate)
        print(f"{manifest}: WER {100 * result['wer']:.2f} % over {result['ref_words']} words, {len(utterances)} utterances")
        for speaker, wer in result["speakers"].items():
            print(f"  {speaker:24s} {100 * wer:6.2f} %")
        for utterance, hypothesis in list(zip(utterances.utterances, result["hypotheses"]))[:3]:
            print(f"  REF {utterance.text}\n  HYP {hypothesis}")


if __name__ == "__main__":
    main()
