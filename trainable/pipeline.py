"""``train_and_evaluate``: one LoRA run from recipe to reports. No Ray here.

The same function is a single run (``python -m trainable.run``), a sweep trial
(``sweeps.search.trial`` wraps it) and a repro seed. ``report`` receives intermediate metrics
and, with them, a checkpoint directory the caller may keep to resume from.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from trainable.config import REPO_ROOT, TrialConfig
from trainable.data import ModelLimits, UtteranceSet, check_overlap, label_ids, prepare_set
from trainable.data_report import check_labels, format_report, label_text, report_from_sets
from trainable.evaluate import corpus_wer_of, transcribe, wer_report
from trainable.files import atomic_write_json, staged_directory
from trainable.metrics import final_metrics, wer_metrics
from trainable.preflight import check_run_output_dir
from trainable.runtime import Runtime
from trainable.trn import FOLDER as TRN_FOLDER, write_eval_set_trn

log = logging.getLogger(__name__)

Report = Callable[[dict, "str | None"], None]


@dataclass
class RunData:
    """A run's utterances, checked and decoded, and what was learnt about them on the way."""

    train_set: UtteranceSet
    eval_sets: list[UtteranceSet]
    overlap: dict[str, dict]  # per eval set: how many of its utterances are also in training
    tokens_per_second: float  # the fastest token rate of the training transcripts
    report: dict  # trainable.data_report: sets, shared speakers, unknown label tokens


def train_and_evaluate(config: TrialConfig, report: Report | None = None, resume_from: str | None = None) -> dict:
    """Train the adapter, score baseline and tuned on every eval manifest, write everything.

    Returns the summary (also written as ``summary.json``). Bad data raises before the
    first training step; a diverging run raises ``NonFiniteLossError``. The output folder
    is written whole when the run succeeds, and never touched when it fails.
    """
    import torch

    from trainable.model import apply_lora, check_target_modules, seed_everything, trainable_parameters
    from trainable.runtime import load_runtime
    from trainable.train import train

    started = time.perf_counter()
    config = config.resolved()
    check_run_output_dir(config.output_dir)  # nothing is written there before the run succeeds
    if config.num_threads:
        torch.set_num_threads(config.num_threads)

    runtime = load_runtime(config.model, config.device)
    check_target_modules(runtime.model, config.target_modules, config.adapter_scope)  # before decoding any audio
    data = load_run_data(config, runtime)
    baseline_key = _baseline_key(runtime, config, data.tokens_per_second)

    seed_everything(config.seed)  # right before LoRA init, so only the seed decides it
    adapted = apply_lora(runtime.model, config.lora_r, config.lora_alpha, config.lora_dropout, config.target_modules, config.adapter_scope)
    runtime = runtime.with_model(adapted)
    n_trainable, n_total = trainable_parameters(adapted)
    log.info("LoRA: %d trainable of %d parameters (%.2f%%) on %s", n_trainable, n_total, 100 * n_trainable / n_total, runtime.device)

    decode = _decoder(runtime, config, data.tokens_per_second)
    baseline = _baseline_reports(adapted, data.eval_sets, decode, resume_from, baseline_key)
    primary = data.eval_sets[0]
    history: list[dict] = []

    def on_eval(state, save_checkpoint) -> None:
        # Every eval set, not only the primary: a sweep's budgets and its console read the others.
        wers = {s.name: {"baseline": baseline[s.name]["wer"], "tuned": corpus_wer_of(s, decode(s))} for s in data.eval_sets}
        metrics = _step_metrics(state, config) | wer_metrics(primary.name, wers)
        history.append(metrics)
        log.info("step %d: %s tuned WER %.4f (baseline %.4f)", state.step, primary.name, metrics["eval_wer"], metrics["baseline_wer"])
        if report:
            with tempfile.TemporaryDirectory(prefix="checkpoint-") as directory:
                save_checkpoint(Path(directory))
                _write_reports(Path(directory), baseline, name="baseline")
                report(metrics, directory)

    with _progress(config.max_steps) as progress:
        state = train(runtime, data.train_set, config, on_eval=on_eval, resume_from=resume_from, progress=progress)
    tuned = {s.name: wer_report(s, decode(s), "tuned", baseline=baseline[s.name]) for s in data.eval_sets}

    with staged_directory(config.output_dir) as staging:  # replaces an earlier run's folder only now
        adapted.save_pretrained(staging / "lora_adapter")
        runtime.processor.save_pretrained(staging / "processor")
        _write_reports(staging, baseline, name="baseline")
        _write_reports(staging, tuned, name="tuned")
        for name in tuned:  # for sclite and sc_stats
            write_eval_set_trn(staging / TRN_FOLDER, name, {"baseline": baseline[name], "tuned": tuned[name]})
        summary = run_summary(config, runtime.device, data, state, {"baseline": baseline, "tuned": tuned}, history=history,
                              elapsed_seconds=time.perf_counter() - started, trainable_parameters=n_trainable)
        atomic_write_json(staging / "summary.json", summary)
    if report:
        report(final_metrics(summary) | {"step": state.step, "done": True}, None)
    return summary


def load_run_data(config: TrialConfig, runtime: Runtime) -> RunData:
    """Every manifest checked and decoded, the leakage guard applied, and the data report
    logged (and its label check applied) before training."""
    train_set, eval_sets = load_utterance_sets(config, runtime)
    overlap = check_overlap(train_set, eval_sets, config.allow_overlap)
    report = report_from_sets(train_set, eval_sets, runtime.processor.tokenizer, config, runtime.limits.sampling_rate)
    log.info("%s", format_report(report))
    warning = check_labels(report, config.strict_text)
    if warning:
        log.warning("%s", warning)
    return RunData(train_set, eval_sets, overlap, tokens_per_second(train_set, runtime.limits), report)


def load_utterance_sets(config: TrialConfig, runtime: Runtime) -> tuple[UtteranceSet, list[UtteranceSet]]:
    """Check and decode every manifest up front: all problems surface before training.
    Training labels are tokenised from ``label_text(config)`` (normalised with text_normalize)."""
    model, tokenizer, limits, to_label = runtime.model, runtime.processor.tokenizer, runtime.limits, label_text(config)
    start_id = model.config.decoder_start_token_id
    eos_id = model.generation_config.eos_token_id or tokenizer.eos_token_id
    eos_id = eos_id[0] if isinstance(eos_id, list) else eos_id
    common = {"max_duration": config.max_duration, "on_bad_row": config.on_bad_row}
    train_set = prepare_set("train", config.train_manifest, limits, tokenize=lambda text: label_ids(tokenizer, to_label(text), start_id, eos_id), **common)
    eval_sets = [prepare_set(name, path, limits, **common) for name, path in config.eval_manifests]
    return train_set, eval_sets


def tokens_per_second(train_set: UtteranceSet, limits: ModelLimits) -> float:
    """The fastest token rate seen in training transcripts, which bounds decoding length."""
    rates = [len(labels) / (len(audio) / limits.sampling_rate) for labels, audio in zip(train_set.labels, train_set.audio)]
    return max(rates) if rates else 20.0


def _decoder(runtime: Runtime, config: TrialConfig, rate: float):
    def decode(utterances: UtteranceSet) -> list[str]:
        from tqdm.auto import tqdm

        with tqdm(total=len(utterances), desc=f"decode {utterances.name}", unit="utt", disable=None, leave=False) as bar:
            return transcribe(runtime, utterances, batch_size=config.eval_batch_size, tokens_per_second=rate, progress=bar.update)

    return decode


def _baseline_key(runtime: Runtime, config: TrialConfig, rate: float):
    """Cache key of an eval set's baseline decode (None with the cache off). Taken before
    LoRA is attached: the baseline is the bare model, whatever the adapter."""
    from trainable.decode_cache import cache_directory, decode_key, model_fingerprint

    if cache_directory() is None:
        return None
    digest = model_fingerprint(runtime.model, runtime.processor)
    settings = {
        "batch_size": config.eval_batch_size, "tokens_per_second": repr(rate), "device": runtime.device,
        "autocast": str(runtime.autocast), "input_name": runtime.input_name,
        "sampling_rate": runtime.limits.sampling_rate, "max_label_tokens": runtime.limits.max_label_tokens,
    }
    return lambda utterances: decode_key(digest, utterances.audio, settings)


def _baseline_reports(model, eval_sets: list[UtteranceSet], decode, resume_from: str | None, key=None) -> dict[str, dict]:
    """Baseline = the same model with the adapter switched off. A checkpoint carries the
    baseline reports, so a resumed trial does not decode them again; with ``key``, an
    earlier trial's decode of the same model and audio is reused (trainable.decode_cache)."""
    from trainable.decode_cache import cached_hypotheses

    if resume_from:
        saved = {s.name: Path(resume_from) / f"{s.name}_baseline.json" for s in eval_sets}
        if all(p.is_file() for p in saved.values()):
            return {name: json.loads(p.read_text()) for name, p in saved.items()}
    reports = {}
    with model.disable_adapter():
        for s in eval_sets:
            hit = False
            if key is None:
                hypotheses = decode(s)
            else:
                hypotheses, hit = cached_hypotheses(key(s), len(s), lambda: decode(s))
                log.info("%s baseline: %s", s.name, "reused a cached decode" if hit else "decoded and cached")
            # Whether this run decoded it: runs that share a cached decode cannot show that decoding is deterministic.
            reports[s.name] = wer_report(s, hypotheses, "baseline") | {"decoded_by": "decode cache" if hit else "this run"}
    return reports


def _write_reports(directory: Path, reports: dict[str, dict], name: str) -> None:
    for eval_name, content in reports.items():
        atomic_write_json(directory / f"{eval_name}_{name}.json", content)


def _step_metrics(state, config: TrialConfig) -> dict:
    recent = state.losses[-config.eval_every :] if state.losses else []
    return {
        "step": state.step,
        "train_loss": sum(recent) / len(recent) if recent else float("nan"),
        "nonfinite_steps": state.nonfinite_steps,
        "train_seconds": state.train_seconds,
    }


# What an eval set's report holds beyond its corpus scores: summary.json leaves it to the report.
_REPORT_ONLY = {"utterances", "eval_set", "system", "manifest", "manifest_sha256", "speakers", "confusion_pairs", "compared_with_baseline"}


def _corpus_only(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in _REPORT_ONLY}


def run_summary(config: TrialConfig, device: str, data: RunData, state, reports: dict[str, dict[str, dict]], **figures) -> dict:
    """summary.json: the recipe, every eval set's corpus scores per system, how training
    went, what the data held, and the versions and commit it ran with. ``figures`` are
    history, elapsed_seconds and trainable_parameters."""
    baseline, tuned = reports["baseline"], reports["tuned"]
    all_sets = [data.train_set, *data.eval_sets]
    return {
        "config": config.to_dict(),
        "device": device,
        "evals": {name: {"baseline": _corpus_only(baseline[name]), "tuned": _corpus_only(tuned[name])} for name in tuned},
        "primary_eval": data.eval_sets[0].name,
        "steps": state.step,
        "nonfinite_steps": state.nonfinite_steps,
        "final_train_loss": state.losses[-1] if state.losses else None,
        "train_seconds": state.train_seconds,
        "steps_per_second": state.step / state.train_seconds if state.train_seconds else None,
        "elapsed_seconds": figures["elapsed_seconds"],
        "trainable_parameters": figures["trainable_parameters"],
        "train_utterances": len(data.train_set),
        "skipped_rows": {s.name: s.skipped for s in all_sets if s.skipped},
        "overlap": data.overlap,
        "history": figures["history"],
        "manifest_sha256": {s.name: s.manifest_sha256 for s in all_sets},
        "data_report": data.report,
        "versions": _versions(),
        "git_commit": _git_commit(),
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "peft", "ray", "optuna", "jiwer"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


class _progress:
    """A tqdm bar with loss and steps/s; silent where stderr is no terminal (Ray workers, CI)."""

    def __init__(self, total: int):
        self.total = total

    def __enter__(self):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc="train", unit="step", disable=None, dynamic_ncols=True)

        def update(state, learning_rate):
            self.bar.n = state.step
            loss = state.losses[-1] if state.losses else float("nan")
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{learning_rate:.2e}", refresh=False)
            self.bar.refresh()

        return update

    def __exit__(self, *exc):
        self.bar.close()
        return False

