"""Build a small Moonshine-architecture model with a character-level processor.

Used twice: by the tests (a tiny random model, no download) and by the demo
pretraining script (a ~2 M-parameter model trained from scratch). Both save with
``save_pretrained`` so the core opens them through the Auto classes, exactly as it
opens ``UsefulSensors/moonshine-tiny`` from a hub.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
# Lower-case letters, digits, space and apostrophe: enough for the demo's
# transcripts, which the generator writes in that alphabet.
CHARACTERS = tuple(" '" + string.ascii_lowercase + string.digits)


def build_char_tokenizer():
    """A fast tokenizer with one token per character, ids 0-3 reserved as Moonshine expects."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def build_processor():
    """Feature extractor (raw 16 kHz waveform, as Moonshine takes) plus the character tokenizer."""
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=False,
        return_attention_mask=True,
    )
    return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=build_char_tokenizer())


def build_model(
    hidden_size: int = 128,
    encoder_layers: int = 4,
    decoder_layers: int = 3,
    attention_heads: int = 4,
    intermediate_size: int | None = None,
    seed: int = 0,
):
    """A randomly initialised MoonshineForConditionalGeneration sized for CPU work."""
    import torch
    from transformers import MoonshineConfig, MoonshineForConditionalGeneration

    vocab_size = len(SPECIAL_TOKENS) + len(CHARACTERS)
    config = MoonshineConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        encoder_num_hidden_layers=encoder_layers,
        decoder_num_hidden_layers=decoder_layers,
        encoder_num_attention_heads=attention_heads,
        decoder_num_attention_heads=attention_heads,
        encoder_num_key_value_heads=attention_heads,
        decoder_num_key_value_heads=attention_heads,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    model = MoonshineForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = 1
    model.generation_config.bos_token_id = 1
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 0
    return model


def save_tiny_moonshine(directory: str | Path, **model_kwargs) -> Path:
    """Write a random model and its processor to ``directory``; returns the path."""
    directory = Path(directory)
    build_model(**model_kwargs).save_pretrained(directory)
    build_processor().save_pretrained(directory)
    return directory
