"""Models and corpora for benchmarking, made in-process: no download, same compute shape.

A random model computes exactly as much as a trained one of the same architecture (except
that it rarely emits end-of-sequence, so greedy decoding runs to its token budget), and a
synthetic waveform costs the encoder exactly what real speech of that length costs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SAMPLING_RATE = 16000
# moonshine-tiny's tokenizer gives about 1.3 tokens per word and read speech about 2.5 words/s.
TOKENS_PER_SECOND = 3.3
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def word_tokenizer(vocab_size: int):
    """A fast word-level tokenizer with exactly ``vocab_size`` ids (0-3 special), so the output
    projection and embedding have moonshine-tiny's shape."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS))]
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + tuple(words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def save_moonshine_tiny_shaped(directory: str | Path, seed: int = 0) -> Path:
    """``MoonshineConfig()`` defaults (moonshine-tiny: hidden 288, 6+6 layers, vocab 32768,
    ~27 M parameters) with random weights. Only ``pad_token_id`` is set, which the default
    leaves empty and training needs; it changes no shape."""
    import torch
    from transformers import MoonshineConfig, MoonshineForConditionalGeneration, Wav2Vec2Processor

    from demo.model import build_processor

    directory = Path(directory)
    config = MoonshineConfig(pad_token_id=0)
    torch.manual_seed(seed)
    model = MoonshineForConditionalGeneration(config)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(directory)
    extractor = build_processor().feature_extractor
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=word_tokenizer(config.vocab_size)).save_pretrained(directory)
    return directory


def speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonics of a wandering pitch under a syllable-rate envelope, plus noise: not speech,
    but a waveform of the right length and level, which is all the compute depends on."""
    n = int(seconds * SAMPLING_RATE)
    t = np.arange(n) / SAMPLING_RATE
    pitch = 120 + 40 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLING_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t) ** 2
    return (0.1 * voiced * envelope + 0.01 * rng.standard_normal(n)).astype(np.float32)


def write_corpus(
    directory: str | Path,
    name: str,
    count: int,
    *,
    seed: int,
    seconds: tuple[float, float] = (2.0, 10.0),
    words: list[str] | None = None,
    tokens_per_second: float = TOKENS_PER_SECOND,
) -> Path:
    """``count`` utterances of uniform random length in ``seconds``, with transcripts of
    ``tokens_per_second`` words drawn from ``words``; returns the JSONL manifest."""
    import soundfile

    directory = Path(directory)
    (directory / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocabulary = words or [f"w{i}" for i in range(1000)]
    rows = []
    for i in range(count):
        length = float(rng.uniform(*seconds))
        audio = directory / "audio" / f"{name}-{i:05d}.wav"
        soundfile.write(audio, speech_like(length, rng), SAMPLING_RATE)
        n_words = max(1, int(round(length * tokens_per_second)))
        text = " ".join(rng.choice(vocabulary, size=n_words))
        rows.append({"id": f"{name}-{i:05d}", "audio_filepath": f"audio/{audio.name}", "text": text,
                     "duration": round(length, 3), "speaker": f"spk{i % 7}"})
    manifest = directory / f"{name}.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest
