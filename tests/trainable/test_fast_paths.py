"""Each faster path gives what the slow one gives: the same hypotheses, losses and reports."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from trainable.decode_cache import ENV_VAR, cached_hypotheses
from trainable.pipeline import train_and_evaluate


def baseline_report(output_dir, name="heldout") -> dict:
    return json.loads((Path(output_dir) / f"{name}_baseline.json").read_text())


def test_cached_baseline_equals_a_fresh_decode(tiny_config, tmp_path, monkeypatch):
    import trainable.pipeline as pipeline

    monkeypatch.setenv(ENV_VAR, "off")
    train_and_evaluate(tiny_config.replace(output_dir=str(tmp_path / "fresh")))

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    train_and_evaluate(tiny_config.replace(output_dir=str(tmp_path / "first")))
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2  # heldout and canary

    decoded = []
    real = pipeline.transcribe
    monkeypatch.setattr(pipeline, "transcribe", lambda runtime, s, *a, **k: decoded.append(s.name) or real(runtime, s, *a, **k))
    train_and_evaluate(tiny_config.replace(output_dir=str(tmp_path / "second"), seed=7))
    assert decoded == ["heldout", "canary"], "the second trial decoded its baseline again"  # tuned only
    for name in ("heldout", "canary"):
        cached, fresh = baseline_report(tmp_path / "second", name), baseline_report(tmp_path / "fresh", name)
        assert (cached.pop("decoded_by"), fresh.pop("decoded_by")) == ("decode cache", "this run")
        assert cached == fresh


def test_baseline_cache_key_follows_decode_settings(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    train_and_evaluate(tiny_config.replace(output_dir=str(tmp_path / "a")))
    train_and_evaluate(tiny_config.replace(output_dir=str(tmp_path / "b"), eval_batch_size=2))
    assert len(list((tmp_path / "cache").glob("*.json"))) == 4


def test_concurrent_trials_decode_a_baseline_once(tmp_path):
    calls = []

    def slow_decode():
        calls.append(1)
        time.sleep(0.3)
        return ["a b", "c"]

    results = []
    threads = [threading.Thread(target=lambda: results.append(cached_hypotheses("k", 2, slow_decode, tmp_path))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True, True]
    assert all(hypotheses == ["a b", "c"] for hypotheses, _ in results)


def test_a_damaged_cache_entry_is_decoded_again(tmp_path):
    (tmp_path / "k.json").write_text('{"hypotheses": ["only one"]}')
    hypotheses, hit = cached_hypotheses("k", 2, lambda: ["x", "y"], tmp_path)
    assert (hypotheses, hit) == (["x", "y"], False)
    assert cached_hypotheses("k", 2, lambda: pytest.fail("decoded again"), tmp_path) == (["x", "y"], True)


def decoder_only_training(config, use_cache: bool, monkeypatch):
    """Train decoder-only LoRA (a peft regex: TrialConfig's leaf names would also match the
    encoder) with the encoder cache forced on or off; returns (state, adapter weights)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    import trainable.train as train_module
    from trainable.model import seed_everything
    from trainable.pipeline import load_utterance_sets
    from trainable.runtime import load_runtime

    config = config.resolved()
    runtime = load_runtime(config.model, "cpu")
    train_set, _ = load_utterance_sets(config, runtime)
    seed_everything(config.seed)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=r".*decoder\.layers\.\d+\.(self_attn|encoder_attn)\.(q|k|v|o)_proj")
    model = get_peft_model(runtime.model, lora)
    assert train_module.encoder_cache_applies(model, config.batch_size)
    caches = []
    real_cache = train_module.EncoderCache
    monkeypatch.setattr(train_module, "EncoderCache", lambda: caches.append(real_cache()) or caches[-1])
    monkeypatch.setattr(train_module, "encoder_cache_applies", lambda model, batch_size: use_cache)
    state = train_module.train(runtime.with_model(model), train_set, config)
    if use_cache:
        assert caches and caches[0].hits > 0, "the cache was never used"
    return state, get_peft_model_state_dict(model)


def test_encoder_cache_gives_identical_losses_and_adapter(tiny_config, monkeypatch):
    config = tiny_config.replace(batch_size=1, gradient_accumulation_steps=4, max_steps=6, learning_rate=5e-2)
    cached, cached_weights = decoder_only_training(config, True, monkeypatch)
    fresh, fresh_weights = decoder_only_training(config, False, monkeypatch)
    assert cached.losses == fresh.losses
    assert all(torch.equal(cached_weights[k], fresh_weights[k]) for k in fresh_weights)


def test_encoder_cache_only_where_the_encoder_output_is_fixed(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSpeechSeq2Seq

    from trainable.model import apply_lora
    from trainable.train import encoder_cache_applies

    def fresh():
        return AutoModelForSpeechSeq2Seq.from_pretrained(tiny_model_dir)

    decoder_only = get_peft_model(fresh(), LoraConfig(r=2, target_modules=r".*decoder.*\.q_proj"))
    assert encoder_cache_applies(decoder_only, batch_size=1)
    assert not encoder_cache_applies(decoder_only, batch_size=2)  # padding changes the encoding
    assert not encoder_cache_applies(apply_lora(fresh(), 2, 4, 0.0, ("q_proj",)), batch_size=1)  # encoder trains
    noisy = fresh()
    noisy.config.attention_dropout = 0.1
    for module in noisy.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.1
    assert not encoder_cache_applies(get_peft_model(noisy, LoraConfig(r=2, target_modules=r".*decoder.*\.q_proj")), batch_size=1)


def decode_both_ways(model_dir, config, adapter_dir=None):
    """The training set decoded in one length-sorted batch and one utterance at a time."""
    from trainable.evaluate import transcribe
    from trainable.pipeline import load_utterance_sets, tokens_per_second
    from trainable.runtime import load_runtime

    runtime = load_runtime(str(model_dir), "cpu")
    train_set, _ = load_utterance_sets(config.resolved(), runtime)
    if adapter_dir:
        from peft import PeftModel

        runtime = runtime.with_model(PeftModel.from_pretrained(runtime.model, str(adapter_dir)).eval())
    common = {"tokens_per_second": tokens_per_second(train_set, runtime.limits)}
    batched = transcribe(runtime, train_set, batch_size=len(train_set), **common)
    single = transcribe(runtime, train_set, batch_size=1, **common)
    return batched, single


def test_batched_decoding_equals_one_at_a_time_after_training(tiny_config, tiny_model_dir):
    """Trained hard on 8 utterances, the tiny model's hypotheses differ and end at EOS."""
    config = tiny_config.replace(max_steps=40, learning_rate=2e-2)
    train_and_evaluate(config)
    batched, single = decode_both_ways(tiny_model_dir, config, Path(config.output_dir) / "lora_adapter")
    assert len(set(single)) > 1 and all(single), f"trivial hypotheses prove nothing: {single}"
    assert batched == single


def test_batched_decoding_equals_one_at_a_time_when_hypotheses_loop(tiny_config, tiny_model_dir):
    """Overtrained, the tiny model repeats one character and never says EOS: each
    hypothesis must stop at its own utterance's budget, not at the longest batch-mate's."""
    config = tiny_config.replace(max_steps=5, learning_rate=0.2)
    train_and_evaluate(config)
    batched, single = decode_both_ways(tiny_model_dir, config, Path(config.output_dir) / "lora_adapter")
    assert len({len(h) for h in single}) > 2 and all(single), f"hypotheses should run to budgets that differ: {single}"
    assert batched == single


def test_bucketing_changes_batch_composition_not_batch_loss(tiny_config):
    """Bucketed and random batching see every utterance once per epoch; a batch's loss
    depends on its content alone, not on the order that bucketing put it in."""
    import numpy as np

    from trainable.data import length_bucketed_batches
    from trainable.pipeline import load_utterance_sets
    from trainable.runtime import load_runtime
    from trainable.train import batch_loss

    config = tiny_config.resolved()
    runtime = load_runtime(config.model, "cpu")
    train_set, _ = load_utterance_sets(config, runtime)
    lengths = [len(a) for a in train_set.audio]
    bucketed = length_bucketed_batches(lengths, 4, np.random.default_rng(0))
    assert sorted(i for batch in bucketed for i in batch) == list(range(len(train_set)))

    def loss(batch):
        return batch_loss(runtime, train_set, batch)

    with torch.no_grad():
        for batch in bucketed:
            assert loss(batch) == pytest.approx(float(loss(batch[::-1])), rel=1e-5)


def test_adapter_scope_puts_lora_in_one_half_and_decoder_scope_engages_the_encoder_cache(tiny_model_dir):
    from transformers import AutoModelForSpeechSeq2Seq

    from trainable.model import apply_lora
    from trainable.train import encoder_cache_applies

    def adapted(scope: str) -> tuple[object, set[str]]:
        model = apply_lora(AutoModelForSpeechSeq2Seq.from_pretrained(tiny_model_dir), 2, 4, 0.0, ("q_proj", "fc1"), scope)
        halves = {name.split(".layers.")[0].rsplit(".", 1)[-1] for name, p in model.named_parameters() if "lora_" in name}
        return model, halves

    decoder_model, decoder_halves = adapted("decoder")
    assert decoder_halves == {"decoder"} and encoder_cache_applies(decoder_model, batch_size=1)
    assert adapted("encoder")[1] == {"encoder"} and adapted("all")[1] == {"encoder", "decoder"}
    # The decoder's cross-attention q_proj is adapted too: everything named q_proj outside the encoder.
    assert any("encoder_attn.q_proj.lora_A" in name for name, _ in decoder_model.named_parameters())
