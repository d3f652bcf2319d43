"""The single-run CLI: flags map onto the recipe, --help stays light, errors are clean."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainable.run import build_parser, config_from_args


def test_help_imports_no_heavy_framework():
    code = ("import sys, runpy; sys.argv=['trainable.run','--help']\n"
            "try: runpy.run_module('trainable.run', run_name='__main__')\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in ('torch','transformers','peft','ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--lora-r" in out and "--eval-manifest" in out
    assert out.strip().endswith("[]")


def test_old_workflow_flags_and_lora_targets_env():
    args = build_parser().parse_args([
        "--manifest-path", "train.jsonl", "--max-steps", "1600", "--learning-rate", "1e-5",
        "--gradient-accumulation-steps", "4", "--lora-r", "8", "--lora-alpha", "16", "--lora-dropout", "0.05",
        "--batch-size", "1", "--device", "mps", "--eval-manifest", "heldout=h.jsonl", "--eval-manifest", "short10=s.jsonl",
    ])
    config = config_from_args(args, environ={"LORA_TARGETS": "q_proj,v_proj"})
    assert config.train_manifest == "train.jsonl" and config.max_steps == 1600 and config.learning_rate == 1e-5
    assert config.gradient_accumulation_steps == 4 and config.device == "mps"
    assert config.target_modules == ("q_proj", "v_proj")
    assert config.eval_manifests == (("heldout", "h.jsonl"), ("short10", "s.jsonl"))
    explicit = config_from_args(build_parser().parse_args(["--target-modules", "qkvo"]), environ={"LORA_TARGETS": "q_proj"})
    assert explicit.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")


def test_config_file_is_a_base_for_flags(tmp_path):
    (tmp_path / "best.json").write_text(json.dumps({"config": {"lora_r": 32, "seed": 5, "output_dir": "old"}, "tuned_wer": 0.1}))
    config = config_from_args(build_parser().parse_args(["--config", str(tmp_path / "best.json"), "--seed", "6"]), environ={})
    assert config.lora_r == 32 and config.seed == 6 and config.output_dir != "old"


@pytest.mark.slow
def test_cli_run_end_to_end_and_clean_errors(tiny_model_dir, tiny_manifests, tmp_path):
    base = [sys.executable, "-m", "trainable.run", "--model", str(tiny_model_dir),
            "--train-manifest", str(tiny_manifests["train"]), "--device", "cpu", "--max-steps", "2",
            "--batch-size", "4", "--log-level", "WARNING"]
    done = subprocess.run(base + ["--eval-manifest", f"heldout={tiny_manifests['heldout']}", "--output-dir", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "heldout" in done.stdout and "Sample predictions" in done.stdout
    assert (tmp_path / "o" / "summary.json").is_file()
    leaked = subprocess.run(base + ["--eval-manifest", f"leak={tiny_manifests['train']}", "--output-dir", str(tmp_path / "p")],
                            capture_output=True, text=True, timeout=300)
    assert leaked.returncode == 2
    assert "LEAKAGE: 8 of 8 utterances of eval set 'leak'" in leaked.stderr
    assert "Traceback" not in leaked.stderr


def test_summary_prints_wer_points_beside_the_relative_change(tmp_path, capsys):
    """A canary from 1.66 % to 3.44 % is +107 % relative but +1.79 points: both are shown."""
    from trainable.run import print_summary

    write_primary_reports(tmp_path)
    summary = {"elapsed_seconds": 70.0, "device": "cpu", "steps": 300, "steps_per_second": 6.0, "primary_eval": "heldout",
               "evals": {"heldout": {"baseline": scores(0.2827), "tuned": scores(0.1808)},
                         "canary": {"baseline": scores(0.0166), "tuned": scores(0.0344)},
                         "clean": {"baseline": scores(0.0), "tuned": scores(0.0)}}}
    print_summary(summary, str(tmp_path))
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(("heldout ", "canary ", "clean "))}
    assert rows["heldout"][4:6] == ["-36.0%", "-10.19"]
    assert rows["canary"][4:6] == ["+107.2%", "+1.78"]
    assert rows["clean"][4:6] == ["n/a", "+0.00"]  # no relative change from a baseline of 0


def test_summary_prints_cer_speakers_substitutions_and_words_fixed_and_broken(tmp_path, capsys):
    from trainable.run import print_summary

    write_primary_reports(tmp_path)
    summary = {"elapsed_seconds": 1.0, "device": "cpu", "steps": 1, "steps_per_second": 1.0, "primary_eval": "heldout",
               "evals": {"heldout": {"baseline": scores(0.5, cer=0.25), "tuned": scores(0.25, cer=0.125)}}}
    print_summary(summary, str(tmp_path))
    out = capsys.readouterr().out
    heldout = next(line.split() for line in out.splitlines() if line.startswith("heldout "))
    assert heldout[6:9] == ["0.2500", "->", "0.1250"]  # CER beside WER
    assert "  a-b+c                       1 utts  0.5000 -> 0.0000  -50.00" in out
    assert "  (unknown)                   1 utts  0.5000 -> 0.5000  +0.00" in out
    assert "Commonest substitutions when tuned (reference -> hypothesis): dog -> dot (1)" in out
    assert "Words the adapter fixed: cat (1)\nWords the adapter broke: none" in out
    assert f"sclite -e utf-8 -i rm -r {tmp_path}/trn/heldout_reference.trn trn -h {tmp_path}/trn/heldout_tuned.trn trn" in out


def scores(wer: float, cer: float = 0.1) -> dict:
    return {"wer": wer, "orthographic_wer": wer, "cer": cer, "num_utterances": 100}


def write_primary_reports(directory) -> None:
    """heldout reports as a run writes them: speaker a-b+c gets "cat" right once tuned."""
    from trainable.error_analysis import compare_systems, confusion_pairs

    def report(hypotheses: list[str]) -> dict:
        rows = [{"id": f"u{i}", "speaker": speaker, "reference": reference, "hypothesis": hypothesis, "ref_words": 2,
                 "errors": sum(r != h for r, h in zip(reference.split(), hypothesis.split()))}
                for i, (speaker, reference, hypothesis) in enumerate(zip(["a-b+c", None], ["a cat", "a dog"], hypotheses))]
        return {"utterances": rows, "confusion_pairs": confusion_pairs((r["reference"], r["hypothesis"]) for r in rows)}

    baseline, tuned = report(["a bat", "a dot"]), report(["a cat", "a dot"])
    tuned["compared_with_baseline"] = compare_systems(baseline, tuned)
    for system, content in (("baseline", baseline), ("tuned", tuned)):
        (directory / f"heldout_{system}.json").write_text(json.dumps(content))
