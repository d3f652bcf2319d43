"""train_and_evaluate end to end on a tiny random Moonshine: outputs, reload, seeds, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainable.metrics import final_metrics
from trainable.pipeline import train_and_evaluate

OUTPUT_FILES = ["lora_adapter/adapter_config.json", "lora_adapter/adapter_model.safetensors",
                "processor/tokenizer.json", "processor/processor_config.json",
                "heldout_baseline.json", "heldout_tuned.json", "canary_baseline.json", "canary_tuned.json",
                "summary.json", "trn/heldout_reference.trn", "trn/heldout_baseline.trn", "trn/heldout_tuned.trn",
                "trn/canary_reference.trn"]


def adapter_weights(output_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(output_dir) / "lora_adapter" / "adapter_model.safetensors")


def tuned_hypotheses(output_dir, name="heldout") -> list[str]:
    report = json.loads((Path(output_dir) / f"{name}_tuned.json").read_text())
    return [u["hypothesis"] for u in report["utterances"]]


def test_two_step_run_writes_every_output(tiny_config):
    summary = train_and_evaluate(tiny_config)
    out = Path(tiny_config.output_dir)
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert summary["steps"] == 2 and summary["nonfinite_steps"] == 0
    assert set(summary["evals"]) == {"heldout", "canary"}
    for key in ("torch", "transformers", "peft"):
        assert summary["versions"][key]
    assert set(summary["manifest_sha256"]) == {"train", "heldout", "canary"}
    assert summary["config"]["lora_r"] == tiny_config.lora_r
    report = json.loads((out / "heldout_tuned.json").read_text())
    assert len(report["utterances"]) == 4
    first = report["utterances"][0]
    assert {"id", "speaker", "reference", "hypothesis", "ref_words", "errors"} <= set(first)
    assert report["errors"] == sum(u["errors"] for u in report["utterances"])
    metrics = final_metrics(summary)
    assert metrics["eval_wer"] == summary["evals"]["heldout"]["tuned"]["wer"]
    assert metrics["canary_baseline_wer"] == summary["evals"]["canary"]["baseline"]["wer"]
    assert metrics["heldout_tuned_cer"] == report["char_errors"] / report["ref_chars"] == summary["evals"]["heldout"]["tuned"]["cer"]
    assert set(report["speakers"]) == {"spk0", "spk1", "spk2"} and "confusion_pairs" in report
    assert {"words_fixed", "words_broken", "speakers"} <= set(report["compared_with_baseline"])
    assert "speakers" not in summary["evals"]["heldout"]["tuned"]  # summary.json keeps corpus scores only


def test_sclite_scores_a_runs_trn_files_as_we_do(tiny_config, sclite_totals):
    """The random tiny model's hypotheses are odd strings: a hard case for the export."""
    train_and_evaluate(tiny_config.replace(learning_rate=0.05))
    out = Path(tiny_config.output_dir)
    for name in ("heldout", "canary"):
        for system in ("baseline", "tuned"):
            report = json.loads((out / f"{name}_{system}.json").read_text())
            totals = sclite_totals(out / "trn" / f"{name}_reference.trn", out / "trn" / f"{name}_{system}.trn")
            assert (totals["words"], totals["errors"]) == (report["ref_words"], report["errors"]), (name, system)


def test_saved_adapter_reloads_to_the_same_model(tiny_config, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    config = tiny_config.replace(max_steps=3, learning_rate=5e-2)  # large steps: the adapter must matter
    train_and_evaluate(config)
    out = Path(config.output_dir)
    processor = AutoProcessor.from_pretrained(out / "processor")
    base = AutoModelForSpeechSeq2Seq.from_pretrained(tiny_model_dir)
    tuned = PeftModel.from_pretrained(base, out / "lora_adapter").eval()
    audio = torch.randn(1, 16000)
    decoder_ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        logits = tuned(input_values=audio, decoder_input_ids=decoder_ids).logits
        with tuned.disable_adapter():
            base_logits = tuned(input_values=audio, decoder_input_ids=decoder_ids).logits
    assert not torch.allclose(logits, base_logits), "the adapter had no effect; the test proves nothing"
    # reload a second time: identical outputs
    again = PeftModel.from_pretrained(AutoModelForSpeechSeq2Seq.from_pretrained(tiny_model_dir), out / "lora_adapter").eval()
    with torch.no_grad():
        assert torch.equal(again(input_values=audio, decoder_input_ids=decoder_ids).logits, logits)
    assert processor.tokenizer.decode([13, 10]) == "he"


def test_same_seed_same_run_other_seed_other_run(tiny_config, tmp_path):
    runs = {}
    for label, seed in (("a", 3), ("b", 3), ("c", 4)):
        config = tiny_config.replace(seed=seed, max_steps=3, output_dir=str(tmp_path / label))
        runs[label] = train_and_evaluate(config)
    weights = {label: adapter_weights(tmp_path / label) for label in runs}
    assert runs["a"]["final_train_loss"] == runs["b"]["final_train_loss"]
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert tuned_hypotheses(tmp_path / "a") == tuned_hypotheses(tmp_path / "b")
    assert runs["a"]["final_train_loss"] != runs["c"]["final_train_loss"]
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_report_callback_and_resume_from_checkpoint_continue_exactly(tiny_config, tmp_path):
    """A run stopped at step 2 and resumed from its checkpoint ends with the same adapter as
    an uninterrupted run: what a retried or restored Ray trial relies on."""
    import shutil

    config = tiny_config.replace(max_steps=4, eval_every=2, seed=11)
    reports, kept = [], tmp_path / "kept-checkpoint"

    def report(metrics, checkpoint_dir):
        reports.append(metrics)
        if checkpoint_dir and not kept.exists():
            shutil.copytree(checkpoint_dir, kept)

    full = train_and_evaluate(config.replace(output_dir=str(tmp_path / "full")), report=report)
    assert [r["step"] for r in reports] == [2, 4]
    assert {"train_loss", "eval_wer", "baseline_wer"} <= set(reports[0])
    assert reports[-1]["done"] is True and reports[-1]["eval_wer"] == full["evals"]["heldout"]["tuned"]["wer"]
    assert (kept / "heldout_baseline.json").is_file()

    resumed = train_and_evaluate(config.replace(output_dir=str(tmp_path / "resumed")), resume_from=str(kept))
    assert resumed["steps"] == 4
    assert resumed["final_train_loss"] == pytest.approx(full["final_train_loss"], rel=1e-6)
    a, b = adapter_weights(tmp_path / "full"), adapter_weights(tmp_path / "resumed")
    assert all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


def test_train_seconds_leave_out_mid_run_evaluations(tiny_config, tmp_path):
    """steps/s is a training speed: a mid-run evaluation (here one that takes 1.5 s more) is
    not training time, or eval_every would look like a slower trainer."""
    import time

    config = tiny_config.replace(max_steps=4, eval_every=2, output_dir=str(tmp_path / "run"))
    result = train_and_evaluate(config, report=lambda metrics, checkpoint_dir: metrics["step"] == 2 and time.sleep(1.5))
    assert result["train_seconds"] < result["elapsed_seconds"] - 1.5
    assert result["steps_per_second"] == pytest.approx(4 / result["train_seconds"])


def test_bad_target_module_lists_the_real_names(tiny_config):
    with pytest.raises(ValueError, match=r"qproj.*q_proj"):
        train_and_evaluate(tiny_config.replace(target_modules=("qproj",)))


def test_diverging_run_raises(tiny_config, monkeypatch):
    import trainable.train as train_module

    monkeypatch.setattr(train_module, "MAX_CONSECUTIVE_NONFINITE", 2)
    real = train_module.batch_loss
    monkeypatch.setattr(train_module, "batch_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(train_module.NonFiniteLossError, match="NaN/inf for 2 steps"):
        train_and_evaluate(tiny_config.replace(max_steps=5))


def test_whisper_architecture_trains_and_decodes(tiny_manifests, tmp_path):
    """Any HF speech seq2seq model: a tiny random Whisper (log-mel input, fixed 30 s window)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from demo.model import CHARACTERS, SPECIAL_TOKENS, build_char_tokenizer
    from trainable.config import TrialConfig

    config = WhisperConfig(
        vocab_size=len(SPECIAL_TOKENS) + len(CHARACTERS), d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=[], begin_suppress_tokens=[],
    )
    model_dir = tmp_path / "whisper"
    WhisperForConditionalGeneration(config).save_pretrained(model_dir)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(model_dir)
    build_char_tokenizer().save_pretrained(model_dir)
    recipe = TrialConfig(
        model=str(model_dir), train_manifest=str(tiny_manifests["train"]),
        eval_manifests=(("heldout", str(tiny_manifests["heldout"])),), max_steps=2, batch_size=4,
        device="cpu", output_dir=str(tmp_path / "run"),
    )
    with pytest.raises(ValueError, match="out_proj"):  # Whisper names it out_proj, not o_proj
        train_and_evaluate(recipe.replace(target_modules=("q_proj", "k_proj", "v_proj", "o_proj")))
    summary = train_and_evaluate(recipe.replace(target_modules=("q_proj", "v_proj", "out_proj")))
    assert summary["steps"] == 2 and summary["evals"]["heldout"]["tuned"]["num_utterances"] == 4
    assert (tmp_path / "run" / "lora_adapter" / "adapter_model.safetensors").is_file()


def test_a_reused_output_dir_keeps_the_earlier_run_when_the_new_one_fails(tiny_config, monkeypatch):
    """The new run fails after its adapter is saved: the folder still holds the earlier run
    whole (its adapter beside its own summary.json), and no staging folder is left."""
    import trainable.pipeline as pipeline

    out = Path(tiny_config.output_dir)
    train_and_evaluate(tiny_config)
    summary_before, adapter_before = (out / "summary.json").read_text(), adapter_weights(out)

    def fail(*args, **kwargs):
        staged = list(out.parent.glob(".run.*.staging"))
        assert len(staged) == 1 and (staged[0] / "lora_adapter").is_dir()  # the new adapter is saved, in staging
        raise OSError("disk full while writing summary.json")

    monkeypatch.setattr(pipeline, "run_summary", fail)
    with pytest.raises(OSError, match="disk full"):
        train_and_evaluate(tiny_config.replace(seed=7, learning_rate=5e-2))
    assert (out / "summary.json").read_text() == summary_before
    after = adapter_weights(out)
    assert all(torch.equal(after[name], adapter_before[name]) for name in adapter_before)
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]


def test_a_successful_run_replaces_an_earlier_run_whole(tiny_config):
    out = Path(tiny_config.output_dir)
    train_and_evaluate(tiny_config)
    (out / "lora_adapter" / "stale.bin").write_text("from the earlier run")
    train_and_evaluate(tiny_config.replace(seed=7))
    assert json.loads((out / "summary.json").read_text())["config"]["seed"] == 7
    assert not (out / "lora_adapter" / "stale.bin").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]
