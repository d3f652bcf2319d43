"""Benchmark one trial against the old workflow and against the model's own compute.

    python -m benchmarks.trial            # a few minutes on 2 CPU cores
    python -m benchmarks.trial --quick    # about a minute: fewer utterances, noisier

Every figure is a ratio of two things measured in this run, back to back or interleaved,
so other tenants of the machine cancel out. Models: one with moonshine-tiny's exact
architecture and size (``MoonshineConfig()`` defaults, random weights: same compute, no
download) and the bundled demo model when ``data/demo/model`` exists. The old workflow's
trial (6,400 training utterances, then a held-out set) takes far too long on a CPU, so a
scaled-down trial is timed phase by phase and extrapolated; the output says which figures
are extrapolated.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "data" / "demo"
# The old workflow (reference/old-training-report.md): 1600 steps x batch 1 x accumulation 4,
# then baseline and tuned decoding of 240 held-out + 17 short utterances, 882 s on Apple MPS.
OLD_SECONDS = 882.06
OLD_TRAIN_UTTERANCES = 6400
OLD_EVAL_UTTERANCES = 257
EVAL_BATCH = 16  # TrialConfig's eval_batch_size default
TRAIN_BATCH = 8  # TrialConfig's batch_size default, for P3


@dataclass(frozen=True)
class Scale:
    """How many utterances each measurement uses."""

    train: int  # the scaled-down trial's training utterances (one epoch at batch 1 x 4)
    eval: int  # its held-out set, also P2's
    batching: int  # P3
    encoder: int  # the encoder-cache row
    search: int  # the best-batch-size search sample


FULL = Scale(train=48, eval=32, batching=32, encoder=8, search=8)
QUICK = Scale(train=16, eval=8, batching=16, encoder=3, search=4)


@dataclass(frozen=True)
class ModelSpec:
    label: str
    description: str
    model_dir: str
    train_manifest: str
    eval_manifest: str


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trial", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer utterances: about a minute, noisier ratios")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default); 1 keeps ratios stable on a shared machine")
    parser.add_argument("--no-demo", action="store_true", help="skip the bundled demo model")
    parser.add_argument("--child-trial", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--child-threads", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_trial:
        return child_trial(*args.child_trial)
    if args.child_threads:
        return child_threads(args.child_threads, passes=3 if args.quick else 6, budget=5.0 if args.quick else 15.0)
    import torch

    from benchmarks import measure

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.threads == 1:
        measure.clock = time.process_time
    scale = QUICK if args.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trial-bench-") as tmp:
        specs = model_specs(Path(tmp), scale, demo=not args.no_demo)
        results = [benchmark_model(spec, scale, args.threads, Path(tmp)) for spec in specs]
        threads = thread_policies(Path(tmp), args.quick)
    print_report(results, threads, scale, args, time.perf_counter() - started)
    return 0


def model_specs(tmp: Path, scale: Scale, demo: bool) -> list[ModelSpec]:
    from benchmarks.synthetic import save_moonshine_tiny_shaped, write_corpus

    model_dir = save_moonshine_tiny_shaped(tmp / "moonshine-tiny-shaped")
    corpus = tmp / "corpus"
    specs = [ModelSpec(
        "moonshine-tiny-shaped", "MoonshineConfig() defaults, random weights; synthetic 2-10 s clips, 3.3 words/s",
        str(model_dir), str(write_corpus(corpus, "train", scale.train, seed=1)), str(write_corpus(corpus, "heldout", scale.eval, seed=2)),
    )]
    if not demo:
        return specs
    if not (DEMO_DIR / "model").is_dir():
        print(f"note: {DEMO_DIR / 'model'} not found (the demo pretraining writes it): demo model skipped", file=sys.stderr)
        return specs
    specs.append(ModelSpec(
        "demo", "data/demo/model (trained) on the first utterances of data/demo/{train,dev}.jsonl", str(DEMO_DIR / "model"),
        str(_head_manifest(DEMO_DIR / "train.jsonl", tmp / "demo-train.jsonl", scale.train)),
        str(_head_manifest(DEMO_DIR / "dev.jsonl", tmp / "demo-dev.jsonl", scale.eval)),
    ))
    return specs


def _head_manifest(source: Path, target: Path, count: int) -> Path:
    """The first ``count`` rows, audio paths made absolute so the copy can live elsewhere."""
    rows = []
    for line in source.read_text().splitlines()[:count]:
        row = json.loads(line)
        row["audio_filepath"] = str((source.parent / row["audio_filepath"]).resolve())
        rows.append(json.dumps(row))
    target.write_text("\n".join(rows) + "\n")
    return target


def benchmark_model(spec: ModelSpec, scale: Scale, threads: int, tmp: Path) -> dict:
    """Every row for one model, each a pair of measurements taken in this run."""
    from benchmarks import measure
    from trainable.pipeline import tokens_per_second

    print(f"[{spec.label}] loading, searching the best batch size", file=sys.stderr)
    bench = measure.load_bench(spec.model_dir, spec.train_manifest, spec.eval_manifest)
    n = len(bench.train_set)
    best, per_size = measure.best_batch_size(bench, list(range(min(scale.search, n))))
    floor, trial = floor_around_trial(bench, spec, best, threads, tmp / f"trial-{spec.label}")
    print(f"[{spec.label}] P2 decoding, P3 batching", file=sys.stderr)
    decoding = measure.decoding_seconds(bench, EVAL_BATCH, tokens_per_second(bench.train_set, bench.limits))
    batching = measure.batching_seconds(bench, list(range(min(scale.batching, n))), TRAIN_BATCH)
    hit = baseline_hit_seconds(bench, trial)
    del bench
    print(f"[{spec.label}] encoder cache (decoder-only LoRA)", file=sys.stderr)
    decoder_only = measure.load_bench(spec.model_dir, spec.train_manifest, spec.eval_manifest, decoder_only=True)
    encoder = measure.encoder_cache_seconds(decoder_only, list(range(min(scale.encoder, n))))
    return {
        "spec": spec, "n_train": n, "best_batch": best, "per_size": per_size, "floor": floor, "trial": trial,
        "decoding": decoding, "batching": batching, "encoder": encoder, "baseline_hit": hit,
        "parameters": sum(p.numel() for p in decoder_only.model.get_base_model().parameters() if not p.requires_grad),
    }


def floor_around_trial(bench, spec: ModelSpec, best: int, threads: int, directory: Path) -> tuple[dict, dict]:
    """The compute floor of the trial's utterances, half timed before the trial and half
    after (halves with the same length mix), in chunks with best batch and batch 1 in turn.
    The trial runs in a child process: its own peak memory, nothing warmed up for it."""
    from benchmarks import measure

    by_length = sorted(range(len(bench.train_set)), key=lambda i: len(bench.train_set.audio[i]))
    floor = {"best": 0.0, "batch1": 0.0}
    kinds = ("best", "batch1") if best != 1 else ("best",)

    def time_floor(indices):
        chunk = max(best, 4)
        for position, start in enumerate(range(0, len(indices), chunk)):
            for kind in kinds if position % 2 == 0 else kinds[::-1]:
                floor[kind] += measure.floor_seconds(bench, indices[start : start + chunk], best if kind == "best" else 1)

    print(f"[{spec.label}] floor (first half)", file=sys.stderr)
    time_floor(by_length[0::2])
    print(f"[{spec.label}] trial", file=sys.stderr)
    trial = run_trial(spec, len(bench.train_set), threads, directory)
    print(f"[{spec.label}] floor (second half)", file=sys.stderr)
    time_floor(by_length[1::2])
    if best == 1:
        floor["batch1"] = floor["best"]
    return floor, trial


def trial_config(spec: ModelSpec, n_train: int, threads: int, output_dir: Path, device: str = "cpu"):
    """The old workflow's recipe (batch 1, accumulation 4, lr 1e-5, r 8, qkvo), one epoch."""
    from trainable.config import TrialConfig

    return TrialConfig(
        model=spec.model_dir, train_manifest=spec.train_manifest, eval_manifests=(("heldout", spec.eval_manifest),),
        lora_r=8, lora_alpha=16, lora_dropout=0.05, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
        learning_rate=1e-5, max_steps=max(1, n_train // 4), batch_size=1, gradient_accumulation_steps=4, warmup_steps=0,
        eval_batch_size=EVAL_BATCH, device=device, num_threads=threads or None, output_dir=str(output_dir),
    )


def run_trial(spec: ModelSpec, n_train: int, threads: int, directory: Path, device: str = "cpu") -> dict:
    """``train_and_evaluate`` in a fresh process with an empty decode cache (a sweep's first trial)."""
    directory.mkdir(parents=True, exist_ok=True)
    trial_config(spec, n_train, threads, directory / "out", device).to_json(directory / "config.json")
    env = dict(os.environ, TRAINABLE_DECODE_CACHE=str(directory / "decode-cache"))
    command = [sys.executable, "-m", "benchmarks.trial", "--child-trial", str(directory / "config.json"), str(directory / "timing.json")]
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    timing = json.loads((directory / "timing.json").read_text())
    seconds = {f"{phase}_seconds": value for phase, value in timing.pop(measure_clock()).items()}
    return timing | seconds | {"cache": str(directory / "decode-cache")}


def measure_clock() -> str:
    """'cpu' when benchmarks.measure times with process time, else 'wall'."""
    from benchmarks import measure

    return "cpu" if measure.clock is time.process_time else "wall"


def child_trial(config_path: str, out_path: str) -> int:
    """Run one trial, timing its phases from outside (the core is not instrumented), on
    both clocks, and recording resident memory after the model load and at its peak."""
    import psutil

    import trainable.model as model_module
    import trainable.pipeline as pipeline
    import trainable.train as train_module
    from trainable.config import TrialConfig

    timing = {"wall": {}, "cpu": {}, "decoded": 0}

    def timed(function, phase: str):
        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            out = function(*args, **kwargs)
            timing["wall"][phase] = timing["wall"].get(phase, 0.0) + time.perf_counter() - wall
            timing["cpu"][phase] = timing["cpu"].get(phase, 0.0) + time.process_time() - cpu
            return out

        return wrapper

    def count_decoded(runtime, utterances, *args, **kwargs):
        timing["decoded"] += len(utterances)
        return real_transcribe(runtime, utterances, *args, **kwargs)

    def load(*args, **kwargs):
        out = real_load(*args, **kwargs)
        timing["rss_loaded"] = psutil.Process().memory_info().rss
        return out

    real_transcribe, real_load = pipeline.transcribe, model_module.load_model_and_processor
    pipeline.transcribe = timed(count_decoded, "decode")
    pipeline._baseline_reports = timed(pipeline._baseline_reports, "baseline")
    train_module.train = timed(train_module.train, "train")
    model_module.load_model_and_processor = load
    summary = timed(pipeline.train_and_evaluate, "elapsed")(TrialConfig.from_file(config_path))
    timing |= {"rss_peak": peak_rss(), "train_utterances": summary["steps"] * 4}
    Path(out_path).write_text(json.dumps(timing))
    return 0


def thread_policies(tmp: Path, quick: bool) -> dict:
    """Row T: all cores vs one thread, with OpenMP's default (spinning) wait policy and with
    OMP_WAIT_POLICY=PASSIVE. Each needs a fresh process: the policy is read at start-up."""
    if (os.cpu_count() or 1) < 2:
        return {}
    print("[threads] OpenMP wait policies", file=sys.stderr)
    out = {}
    for policy in ("default", "PASSIVE"):
        env = {k: v for k, v in os.environ.items() if k not in {"OMP_WAIT_POLICY", "OMP_NUM_THREADS"}}
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        path = tmp / f"threads-{policy}.json"
        command = [sys.executable, "-m", "benchmarks.trial", "--child-threads", str(path)] + (["--quick"] if quick else [])
        subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out[policy] = json.loads(path.read_text())
    return out


def child_threads(out_path: str, passes: int, budget: float) -> int:
    """Bare passes of a demo-sized LoRA model on a 2-s clip, one thread and all cores in
    turn; fewer passes once ``budget`` seconds are spent (a spinning pass can take seconds)."""
    import torch

    from demo.model import build_model
    from trainable.model import apply_lora

    model = apply_lora(build_model(), 8, 16, 0.05, ("q_proj", "k_proj", "v_proj", "o_proj")).train()
    audio = 0.1 * torch.randn(1, 32000)
    inputs, labels = {"input_values": audio, "attention_mask": torch.ones_like(audio, dtype=torch.long)}, torch.randint(4, 30, (1, 30))
    cores = os.cpu_count() or 1
    seconds = {1: 0.0, cores: 0.0}
    for threads in seconds:  # warm-up, untimed
        torch.set_num_threads(threads)
        model(**inputs, labels=labels).loss.backward()
    started, done = time.perf_counter(), 0
    while done < passes and (done == 0 or time.perf_counter() - started < budget):
        done += 1
        for threads in seconds:
            torch.set_num_threads(threads)
            began = time.perf_counter()
            model(**inputs, labels=labels).loss.backward()
            seconds[threads] += time.perf_counter() - began
            model.zero_grad(set_to_none=True)
    Path(out_path).write_text(json.dumps({"cores": cores, "one": seconds[1] / done, "all": seconds[cores] / done}))
    return 0


def peak_rss() -> int:
    """This process's resident high-water mark in bytes. Linux's VmHWM belongs to the
    address space, so it starts afresh at exec; ru_maxrss would carry the parent's peak
    over from the fork."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def baseline_hit_seconds(bench, trial: dict) -> float:
    """What a later trial pays for its baseline: hash the weights and the eval audio, then
    read the entry the benchmark's trial wrote."""
    from trainable.decode_cache import cached_hypotheses, decode_key, model_fingerprint

    from benchmarks.measure import clock

    began = clock()
    decode_key(model_fingerprint(bench.model.get_base_model(), bench.processor), bench.eval_set.audio, {})
    for entry in Path(trial["cache"]).glob("*.json"):
        cached_hypotheses(entry.stem, len(bench.eval_set), lambda: sys.exit("benchmark: the trial's cache entry is unreadable"), entry.parent)
    return clock() - began


def extrapolate(result: dict) -> dict:
    """Old-workflow-sized figures from the scaled trial: fixed costs once, training per
    utterance x 6,400, decoding per utterance x 257 held-out (x2 with a cold baseline cache)."""
    trial, floor = result["trial"], result["floor"]
    n_train = trial["train_utterances"]
    train_per = trial["train_seconds"] / n_train
    decode_per = trial["decode_seconds"] / max(1, trial["decoded"])
    fixed = trial["elapsed_seconds"] - trial["train_seconds"] - trial["decode_seconds"]
    cold = fixed + OLD_TRAIN_UTTERANCES * train_per + 2 * OLD_EVAL_UTTERANCES * decode_per
    warm = cold - OLD_EVAL_UTTERANCES * decode_per
    floor_old = OLD_TRAIN_UTTERANCES * floor["best"] / result["n_train"]
    return {"cold": cold, "warm": warm, "floor": floor_old, "fixed": fixed, "train_per": train_per, "decode_per": decode_per}


def rows(result: dict) -> list[tuple[str, str, str, str]]:
    """(row, what, ratio, detail) for the table."""
    trial, floor, n = result["trial"], result["floor"], result["n_train"]
    old = extrapolate(result)
    decoding, batching, encoder = result["decoding"], result["batching"], result["encoder"]
    dec_rate = {k: decoding["count"] / s for k, s in decoding["seconds"].items()}
    bat_rate = {k: batching["count"] / s for k, s in batching["seconds"].items()}
    steady = encoder["seconds"]["recomputed"] / encoder["seconds"]["cached"]
    epochs = OLD_TRAIN_UTTERANCES / 240  # the old workflow's 240-utterance manifest: ~27 epochs
    per_utt = {k: s / encoder["count"] for k, s in encoder["seconds"].items()}
    first = encoder["first_epoch"] / encoder["count"]
    over_run = epochs * per_utt["recomputed"] / (first + (epochs - 1) * per_utt["cached"])
    return [
        ("P1", "trial / compute floor, old-workflow size (extrapolated)", f"{old['cold'] / old['floor']:.2f}",
         f"{old['cold']:.0f} s vs floor {old['floor']:.0f} s (6,400 train + 2x257 eval utt); old workflow: {OLD_SECONDS:.0f} s on an Apple M-series GPU (other hardware)"),
        ("P1", "  same, baseline decode from the cache (a sweep's later trials)", f"{old['warm'] / old['floor']:.2f}",
         f"{old['warm']:.0f} s; eval {old['decode_per']:.2f} s/utt, train {old['train_per']:.2f} s/utt, fixed {old['fixed']:.0f} s"),
        ("P1", f"  measured: {n}-utterance trial / floor of its {n} utterances", f"{trial['elapsed_seconds'] / floor['best']:.2f}",
         f"{trial['elapsed_seconds']:.1f} s vs {floor['best']:.1f} s (best batch {result['best_batch']}; trial wall time {trial['wall']['elapsed']:.1f} s); small scale: load and eval weigh more"),
        ("P1", "  training loop / bare fwd+bwd at the recipe's batch 1", f"{trial['train_seconds'] / floor['batch1']:.2f}",
         f"{trial['train_seconds']:.1f} s vs {floor['batch1']:.1f} s: the harness's own overhead in training; batch 1 vs best batch costs {floor['batch1'] / floor['best']:.2f}x"),
        ("P2", f"eval utt/s: batched ({min(EVAL_BATCH, decoding['count'])}, length-sorted) / one at a time", f"{dec_rate['batched'] / dec_rate['single']:.1f}x",
         f"{dec_rate['batched']:.2f} vs {dec_rate['single']:.2f} utt/s; identical hypotheses {decoding['agree']}/{decoding['count']}"),
        ("P3", f"train utt/s: length-bucketed / random batches of {TRAIN_BATCH}", f"{bat_rate['bucketed'] / bat_rate['random']:.2f}x",
         f"{bat_rate['bucketed']:.2f} vs {bat_rate['random']:.2f} utt/s; padded samples {100 * batching['padded']['bucketed']:.0f}% vs {100 * batching['padded']['random']:.0f}%"),
        ("P4", "peak RSS of the trial / RSS with the model loaded", f"{trial['rss_peak'] / trial['rss_loaded']:.2f}",
         f"peak {trial['rss_peak'] / 2**20:.0f} MiB, after load {trial['rss_loaded'] / 2**20:.0f} MiB"),
        ("E", "decoder-only LoRA at batch 1: step time, recomputed / cached encoder", f"{steady:.2f}x",
         f"{per_utt['recomputed']:.3f} vs {per_utt['cached']:.3f} s/utt; over 27 epochs incl. filling: {over_run:.2f}x"),
        ("B", "baseline decode of the eval set: fresh / cache hit", f"{trial['baseline_seconds'] / result['baseline_hit']:.0f}x",
         f"{trial['baseline_seconds']:.1f} s vs {result['baseline_hit']:.2f} s (hashing the weights and audio, reading the entry)"),
    ]


def print_report(results: list[dict], threads: dict, scale: Scale, args, seconds: float) -> None:
    import torch

    print(f"\nTrial benchmark ({'--quick' if args.quick else 'default'}; torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} CPU thread(s) of {os.cpu_count()}; {seconds:.0f} s wall)")
    if measure_clock() == "cpu":
        print("Seconds below are CPU seconds of the one thread doing the work: on an idle machine they equal wall time, "
              "and other tenants barely move them (wall time here swung 2x between minutes).")
    print(f"Scaled down: {scale.train} training utterances (the old trial saw 6,400) and {scale.eval} held-out (old: 257); "
          "P1's old-workflow row is extrapolated from the timed phases.")
    for result in results:
        spec = result["spec"]
        print(f"\n{spec.label}: {spec.description} ({result['parameters'] / 1e6:.1f} M parameters)")
        table = rows(result)
        width = max(len(what) for _, what, _, _ in table)
        for row, what, ratio, detail in table:
            print(f"  {row:<3} {what:<{width}}  {ratio:>7}  {detail}")
    if threads:
        print("\nthis machine (CPU threads; the rows above use --threads):")
    for policy, t in threads.items():
        print(f"  T   step time, {t['cores']} threads (torch's default) / 1 thread, OpenMP wait policy {policy}: "
              f"{t['all'] / t['one']:.2f}  ({t['all'] * 1000:.0f} vs {t['one'] * 1000:.0f} ms; demo-sized model, 2-s clip)")
    print("\nP5 (GPU time and achieved FLOP/s vs measured bf16 matmul rate): " + p5_line(results, args))


def p5_line(results: list[dict], args) -> str:
    import torch

    if not torch.cuda.is_available():
        return "skipped: no GPU"
    from benchmarks import measure

    spec = results[0]["spec"]
    peak = measure.matmul_rate("cuda")
    with tempfile.TemporaryDirectory(prefix="trial-bench-gpu-") as tmp:
        trial = run_trial(spec, results[0]["n_train"], args.threads, Path(tmp), device="cuda")
    bench = measure.load_bench(spec.model_dir, spec.train_manifest, spec.eval_manifest, device="cuda")
    flops = measure.training_flops(bench, list(range(results[0]["n_train"])), 1)
    achieved = flops / trial["train_seconds"]
    return (f"{spec.label}: trial {trial['elapsed_seconds']:.1f} s (train {trial['train_seconds']:.1f} s), "
            f"achieved {achieved / 1e12:.2f} TFLOP/s = {achieved / peak:.1%} of the measured bf16 matmul rate {peak / 1e12:.0f} TFLOP/s")


if __name__ == "__main__":
    raise SystemExit(main())
