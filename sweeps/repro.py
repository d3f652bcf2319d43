"""``python -m sweeps.repro``: rerun a config across seeds and decide whether its WER gain is real.

    python -m sweeps.repro --trials 5                 # best.json of the newest sweep under results/
    python -m sweeps.repro --sweep demo --trials 2 max_steps=50
    python -m sweeps.repro --config my_config.json --address auto --gpus-per-trial 0.5
    python -m sweeps.repro --from-scores results/demo/repro/scores.parquet --output-dir /tmp/again

Each seed trains and scores baseline and tuned as one Ray task (in parallel as resources allow,
on this machine or a cluster); the per-utterance scores land in ``scores.parquet`` and the
statistics of ../shared/notes/wer-significance.md (sweeps/significance.py) decide the verdict.
One seed is also rerun to check determinism, reported apart from the verdict.

``--help`` imports neither torch nor ray: they are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from trainable.config import ConfigError, TrialConfig, atomic_write_text

RESULTS = Path("results")
SCORES_FILE = "scores.parquet"
# Columns of scores.parquet in this order: the schema, then the edit counts behind it.
SCORE_COLUMNS = (
    "seed", "system", "eval_set", "utterance_id", "speaker", "ref_words", "errors", "reference", "hypothesis",
    "substitutions", "deletions", "insertions", "orthographic_ref_words", "orthographic_errors",
)
# Fields a repro run sets itself: overriding them on the command line would be silently lost.
SET_BY_REPRO = {"seed": "use --seeds", "output_dir": "use --output-dir", "num_threads": "use --cpus-per-trial"}
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2


class ReproError(Exception):
    """Bad input to the repro command; the message says what to change."""


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sweeps.repro",
        description="Rerun a LoRA config with several seeds (Ray tasks), score baseline and tuned per utterance, "
        "and decide with bootstrap statistics whether the WER gain is real: stable gain, regression, unstable "
        "or no significant change, plus an underpowered flag and a determinism check.",
        epilog="Exit status: 0 done; 1 a seed failed, or --require stable-gain and the verdict is another; "
        "2 bad input (config, overrides, scores table).",
    )
    source = parser.add_argument_group("what to rerun (default: best.json of the newest sweep under results/)")
    source.add_argument("--sweep", metavar="NAME", help="use results/NAME/best.json")
    source.add_argument("--config", metavar="FILE", help="a core config (JSON, a sweep's best.json, or YAML with a trial: section)")
    source.add_argument("overrides", nargs="*", metavar="key=value", help="config fields to change, e.g. max_steps=50 (trial.max_steps=50 works too)")
    seeds = parser.add_argument_group("seeds and determinism")
    seeds.add_argument("--trials", type=int, default=5, metavar="N", help="number of seeds (default 5, the fewest the verdict trusts)")
    seeds.add_argument("--seeds", metavar="S1,S2,...", help="explicit seeds (default: config seed + 1 ... + N, never the sweep's own seed)")
    seeds.add_argument("--determinism-reruns", type=int, default=1, metavar="K", help="rerun the first K seeds once each and compare hypotheses (default 1; 0 = off)")
    ray_group = parser.add_argument_group("Ray")
    ray_group.add_argument("--address", help="join a Ray cluster (e.g. auto); default: a fresh local instance")
    ray_group.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per seed run; torch threads follow it (default 1)")
    ray_group.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per seed run, fractional to share one GPU (default 0)")
    stats = parser.add_argument_group("statistics and output")
    stats.add_argument("--output-dir", metavar="DIR", help="default results/<sweep>/repro/ (--config FILE: results/repro-<stem>/)")
    stats.add_argument("--from-scores", metavar="PATH", help="recompute verdict and report from a stored scores.parquet: no model, no Ray")
    stats.add_argument("--eval-set", help="the eval set to test (default: the config's first; with --from-scores, the first in the file); others get plain WERs")
    stats.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    stats.add_argument("--min-effect", type=float, default=0.10, metavar="FRACTION", help="smallest gain worth detecting, relative to the baseline WER (default 0.10 = 10%%)")
    stats.add_argument("--min-effect-abs", type=float, metavar="WER", help="the same in absolute WER (0.005 = half a point); overrides --min-effect")
    stats.add_argument("--seed", type=int, default=0, help="bootstrap seed, so the report is reproducible (default 0)")
    stats.add_argument("--require", choices=["stable-gain"], help="exit 1 unless the verdict is this (gate a CI pipeline on it)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(argv)  # key=value may sit between options
    args.argv = argv
    try:
        if args.from_scores:
            record = from_scores(args)
            failed = False
        else:
            record, failed = rerun(args)
    except ReproError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(record["sentence"])
    for warning in record.get("warnings", []):  # a canary that got worse must not hide in report.md
        print(f"Warning: {warning}")
    if args.require == "stable-gain" and record["verdict"] != "stable gain":
        print(f"--require stable-gain: the verdict is {record['verdict']!r}", file=sys.stderr)
        return EXIT_GATE_FAILED
    return EXIT_GATE_FAILED if failed else 0


# --------------------------------------------------------------------------- which config


def find_config_source(args: argparse.Namespace) -> tuple[Path, str, Path]:
    """(config file, run name, default output dir) from --config, --sweep or the newest sweep."""
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ReproError(f"--config {path}: no such file")
        if path.name == "best.json":  # a sweep's winner: keep the repro beside the sweep
            return path, path.parent.name, path.parent / "repro"
        return path, path.stem, RESULTS / f"repro-{path.stem}"
    if args.sweep:
        path = RESULTS / args.sweep / "best.json"
        if not path.is_file():
            raise ReproError(f"--sweep {args.sweep}: {path} does not exist (sweeps under {RESULTS}/: {_sweep_names() or 'none'})")
        return path, args.sweep, path.parent / "repro"
    candidates = sorted(RESULTS.glob("*/best.json"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ReproError(f"no sweep found ({RESULTS}/*/best.json): run `python -m sweeps.run` first, or pass --config FILE")
    return candidates[-1], candidates[-1].parent.name, candidates[-1].parent / "repro"


def _sweep_names() -> str:
    return ", ".join(sorted(p.parent.name for p in RESULTS.glob("*/best.json")))


def load_config(path: Path, overrides: Sequence[str]) -> TrialConfig:
    """The core config from JSON (plain or best.json) or YAML (plain or a sweep's trial: section),
    with ``key=value`` overrides applied on top."""
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(path.read_text()) or {}
            raw = raw.get("trial", raw.get("config", raw))
        else:
            raw = json.loads(path.read_text())
            raw = raw.get("config", raw)
        # A seed run reports to nobody: the sweep's mid-run evaluations (eval_every) would
        # only cost decoding time, so they are off unless an override asks for them.
        values = {**TrialConfig.from_dict(raw).to_dict(), "eval_every": 0, **parse_overrides(overrides)}
        return TrialConfig.from_dict(values)
    except (ConfigError, ValueError) as error:
        raise ReproError(f"{path}: {error}") from None


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``max_steps=50`` or ``trial.max_steps=50``; values are read as YAML, like the sweep's overrides."""
    import yaml

    values = {}
    for text in overrides:
        key, sep, value = text.partition("=")
        key = key.strip().removeprefix("trial.")
        if not sep or not key:
            raise ReproError(f"override {text!r} is not KEY=VALUE (e.g. max_steps=50)")
        if key in SET_BY_REPRO:
            raise ReproError(f"override {key}: set per seed by repro; {SET_BY_REPRO[key]}")
        try:
            values[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise ReproError(f"override {key}: cannot read value {value!r}") from None
    return values


def choose_seeds(args: argparse.Namespace, config_seed: int) -> list[int]:
    """Explicit --seeds, else config seed + 1 ... + N: the sweep picked this config partly because
    its own seed did well (winner's curse), so reusing that seed would flatter the result."""
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ReproError(f"--seeds {args.seeds!r}: expected integers separated by commas") from None
    else:
        if args.trials < 1:
            raise ReproError(f"--trials {args.trials}: need at least 1 seed (5 for a verdict that is not underpowered)")
        seeds = [config_seed + 1 + i for i in range(args.trials)]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ReproError(f"--seeds {args.seeds!r}: need distinct seeds")
    return seeds


# --------------------------------------------------------------------------- one seed (a Ray task)


def run_seed(config: dict[str, Any]) -> dict[str, Any]:
    """Train and score one seed; runs inside a Ray worker and returns the per-utterance rows,
    so the driver never needs to see the worker's disk (works across a cluster). The seed's
    adapter and reports stay in its output dir on the node that ran it (``node`` says which)."""
    from sweeps.cluster import check_data_on_node, node_label
    from trainable.pipeline import train_and_evaluate

    trial = TrialConfig.from_dict(config)
    check_data_on_node(trial)  # on a cluster: a worker without the data names itself and the paths
    summary = train_and_evaluate(trial)
    return {
        "rows": utterance_rows(Path(trial.output_dir), [name for name, _ in trial.eval_manifests], trial.seed),
        "steps": summary.get("steps"),
        "elapsed_seconds": summary.get("elapsed_seconds"),
        "device": summary.get("device"),
        "node": node_label(),
    }


def utterance_rows(output_dir: Path, eval_sets: Sequence[str], seed: int) -> list[dict[str, Any]]:
    """scores.parquet rows from the core's ``<eval set>_<system>.json`` reports of one run."""
    rows = []
    for eval_set in eval_sets:
        for system in ("baseline", "tuned"):
            report = json.loads((output_dir / f"{eval_set}_{system}.json").read_text())
            for utterance in report["utterances"]:
                rows.append({
                    "seed": int(seed), "system": system, "eval_set": eval_set,
                    "utterance_id": str(utterance["id"]), "speaker": str(utterance.get("speaker") or ""),
                    "ref_words": int(utterance["ref_words"]), "errors": int(utterance["errors"]),
                    "reference": str(utterance["reference"]), "hypothesis": str(utterance["hypothesis"]),
                    **{key: int(utterance.get(key) or 0) for key in SCORE_COLUMNS[9:]},
                })
    return rows


# --------------------------------------------------------------------------- many seeds through Ray


def seed_configs(config: TrialConfig, seeds: Sequence[int], reruns: int, repro_dir: Path, cpus: float) -> list[tuple[int, bool, TrialConfig]]:
    """(seed, is_rerun, config) per task: resolved paths, one output dir per run, threads = CPUs."""
    base = config.resolved().replace(num_threads=max(1, int(cpus)))
    runs = [(seed, False, base.replace(seed=seed, output_dir=str(repro_dir / f"seed_{seed}"))) for seed in seeds]
    runs += [(seed, True, base.replace(seed=seed, output_dir=str(repro_dir / f"seed_{seed}_rerun"))) for seed in seeds[:reruns]]
    return runs


def run_all_seeds(
    runs: list[tuple[int, bool, TrialConfig]], address: str | None, cpus: float, gpus: float, task_fn=run_seed,
) -> tuple[list[dict], list[dict]]:
    """Launch every seed run as a Ray task and collect results as they finish.

    Returns (finished, failed). A failed seed is recorded and the others go on: a verdict over
    fewer seeds is still informative, and the report names the failure.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(task_fn)
        pending = {task.remote(config.to_dict()): (seed, rerun, config) for seed, rerun, config in runs}
        print(f"repro: {len(runs)} seed runs ({sum(r for _, r, _ in runs)} determinism reruns), {cpus:g} CPU / {gpus:g} GPU each", flush=True)
        finished, failed = [], []
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            seed, rerun, config = pending.pop(ref)
            kind = "rerun" if rerun else "seed"
            try:
                result = ray.get(ref)
            except Exception as error:  # RayTaskError wraps whatever the trainer raised
                failed.append({"seed": seed, "kind": kind, "error": _last_line(error), "output_dir": config.output_dir})
                print(f"repro: {kind} {seed} FAILED: {_last_line(error)}", flush=True)
                continue
            finished.append({**result, "seed": seed, "rerun": rerun, "output_dir": config.output_dir})
            print(f"repro: {kind} {seed} done in {result['elapsed_seconds']:.1f} s ({result['steps']} steps)", flush=True)
        return finished, failed
    finally:
        if started_here:
            ray.shutdown()


def _last_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def scores_table(finished: list[dict], eval_order: Sequence[str]) -> Any:
    """scores.parquet's table from the main (not rerun) seed runs, primary eval set first."""
    import pandas as pd

    rows = [row for run in finished if not run["rerun"] for row in run["rows"]]
    if not rows:
        raise ReproError("every seed run failed; nothing to score (see the errors above)")
    table = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    order = {name: i for i, name in enumerate(eval_order)}
    table["_order"] = table["eval_set"].map(order)
    return table.sort_values(["_order", "seed", "system"], kind="stable").drop(columns="_order").reset_index(drop=True)


def write_scores(table: Any, path: Path) -> None:
    """Parquet, written then renamed so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- determinism


def rerun_checks(finished: list[dict]) -> list[dict[str, Any]]:
    """Determinism check 2: a rerun of a seed must give the same hypotheses, utterance by utterance."""
    main = {run["seed"]: run for run in finished if not run["rerun"]}
    checks = []
    for rerun in (run for run in finished if run["rerun"]):
        if rerun["seed"] not in main:
            continue
        first = {(r["eval_set"], r["system"], r["utterance_id"]): r["hypothesis"] for r in main[rerun["seed"]]["rows"]}
        second = {(r["eval_set"], r["system"], r["utterance_id"]): r["hypothesis"] for r in rerun["rows"]}
        differing = sorted(f"{e}/{s}/{u}" for (e, s, u), h in second.items() if first.get((e, s, u)) != h)
        checks.append({
            "seed": rerun["seed"], "identical": not differing and first.keys() == second.keys(),
            "differing": len(differing), "examples": differing[:5],
            # Bitwise equality is only promised on the same device; a cluster may place the rerun elsewhere.
            "devices": [main[rerun["seed"]].get("device"), rerun.get("device")],
            "nodes": [main[rerun["seed"]].get("node"), rerun.get("node")],
        })
    return checks


def determinism_summary(baseline_check: dict[str, Any], reruns: list[dict[str, Any]]) -> dict[str, Any]:
    """``deterministic: yes/no`` from both checks, kept apart from the verdict."""
    parts, verdicts = [], []
    if baseline_check.get("checked"):
        verdicts.append(baseline_check["identical"])
        parts.append("baseline hypotheses identical across seeds" if baseline_check["identical"]
                     else f"baseline hypotheses differ across seeds on {baseline_check['count']} utterances")
    for check in reruns:
        verdicts.append(check["identical"])
        devices = check.get("devices") or []
        where = f" (ran on {devices[0]} then {devices[1]})" if len(set(devices)) > 1 else ""
        parts.append(f"seed {check['seed']} rerun gives identical hypotheses{where}" if check["identical"]
                     else f"seed {check['seed']} rerun differs on {check['differing']} hypotheses{where}")
    deterministic = "unknown" if not verdicts else ("yes" if all(verdicts) else "no")
    return {"deterministic": deterministic, "detail": "; ".join(parts) or "not checked (one seed, no rerun)",
            "baseline_across_seeds": baseline_check, "reruns": reruns}


# --------------------------------------------------------------------------- the two modes


def rerun(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """Train every seed through Ray, store scores.parquet, then analyse and report."""
    source, name, default_dir = find_config_source(args)
    config = load_config(source, args.overrides)
    seeds = choose_seeds(args, config.seed)
    repro_dir = Path(args.output_dir or default_dir).absolute()
    runs = seed_configs(config, seeds, max(0, args.determinism_reruns), repro_dir, args.cpus_per_trial)
    started = time.time()
    finished, failed = run_all_seeds(runs, args.address, args.cpus_per_trial, args.gpus_per_trial)
    wall = time.time() - started
    table = scores_table(finished, [n for n, _ in config.eval_manifests])
    write_scores(table, repro_dir / SCORES_FILE)
    reruns = rerun_checks(finished)
    atomic_write_text(repro_dir / "determinism.json", json.dumps({"reruns": reruns}, indent=2) + "\n")
    atomic_write_text(repro_dir / "config.json", json.dumps(config.replace(output_dir=str(repro_dir)).to_dict(), indent=2) + "\n")
    run = run_record(args, source, name, config, finished, failed, wall)
    atomic_write_text(repro_dir / "run.json", json.dumps(run, indent=2) + "\n")
    record = analyse_and_report(table, repro_dir, args, args.eval_set or config.primary_eval, reruns, run, config.to_dict(), str(repro_dir / SCORES_FILE))
    return record, bool(failed)


def run_record(args, source: Path, name: str, config: TrialConfig, finished: list[dict], failed: list[dict], wall: float) -> dict[str, Any]:
    """run.json: what was run, where and how long, for the report's run summary."""
    devices = sorted({str(run.get("device")) for run in finished})
    return {
        "name": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": "python -m sweeps.repro " + " ".join(shlex.quote(a) for a in args.argv),
        "source": str(source),
        "model": config.model,
        "device": ", ".join(devices),
        "wall_seconds": wall,
        "seed_runs": [{key: run.get(key) for key in ("seed", "rerun", "elapsed_seconds", "steps", "device", "node", "output_dir")} for run in finished],
        "failed": failed,
        "max_wer_increase": wer_budgets(source),
    }


def wer_budgets(source: Path) -> dict[str, float]:
    """The sweep's canary budget (best.json's ``max_wer_increase``): the sweep checked it on
    one seed; the report checks it on every seed."""
    if source.suffix != ".json":
        return {}
    budgets = _read_json(source).get("max_wer_increase") or {}
    return {str(name): float(limit) for name, limit in budgets.items()} if isinstance(budgets, dict) else {}


def from_scores(args: argparse.Namespace) -> dict[str, Any]:
    """Statistics and report from a stored table alone; config.json, run.json and determinism.json
    beside it are used when present (a repro directory has them)."""
    from sweeps.significance import ScoresError, read_scores

    path = Path(args.from_scores)
    try:
        table = read_scores(str(path))
    except ScoresError as error:
        raise ReproError(str(error)) from None
    beside = path.parent
    reruns = _read_json(beside / "determinism.json").get("reruns", [])
    run = _read_json(beside / "run.json") or {"name": beside.name}
    output_dir = Path(args.output_dir) if args.output_dir else beside
    return analyse_and_report(table, output_dir, args, args.eval_set, reruns, run, _read_json(beside / "config.json") or None, str(path))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def analyse_and_report(
    table: Any, output_dir: Path, args: argparse.Namespace, eval_set: str | None, reruns: list[dict],
    run: dict[str, Any], config: dict[str, Any] | None, source: str,
) -> dict[str, Any]:
    """The statistics on the primary eval set, plain WERs on the others, and every output file."""
    from sweeps import significance
    from sweeps.repro_report import write_outputs

    order = significance.eval_sets_in_order(table)
    primary = eval_set or order[0]
    try:
        scores = significance.paired_scores(table, primary)
        analysis = significance.analyse(
            scores, resamples=args.resamples, seed=args.seed, min_effect=args.min_effect_abs, min_effect_relative=args.min_effect,
        )
    except (significance.ScoresError, ValueError) as error:
        raise ReproError(f"{source}: {error}") from None
    determinism = determinism_summary(significance.baselines_identical(table), reruns)
    record = write_outputs(output_dir, analysis, table, determinism, run, config)
    print(f"repro: wrote {output_dir}/verdict.json, report.md and plots; deterministic: {determinism['deterministic']}")
    return record


if __name__ == "__main__":
    sys.exit(main())
