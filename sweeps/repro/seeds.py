"""Retrain a recipe once per seed, each as a Ray task, and check that reruns agree.

Each task trains and scores baseline and tuned on every eval set and returns its
per-utterance rows, so the driver never needs to read a worker's disk (works across a
cluster); a failed seed is recorded and the others go on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from sweeps.repro import ReproError
from sweeps.wording import counted
from trainable.config import TrialConfig
from trainable.files import atomic_output

# Columns of scores.parquet in this order: what the statistics read, then the edit counts behind them.
SCORE_COLUMNS = (
    "seed", "system", "eval_set", "utterance_id", "speaker", "ref_words", "errors", "reference", "hypothesis",
    "substitutions", "deletions", "insertions", "orthographic_ref_words", "orthographic_errors", "ref_chars", "char_errors",
)


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
    return {**seed_result(summary, trial), "node": node_label()}


def seed_result(summary: dict[str, Any], trial: TrialConfig) -> dict[str, Any]:
    """What the driver keeps of a finished seed run: the per-utterance rows read from its
    output dir, and how it ran (from its summary.json)."""
    return {
        "rows": utterance_rows(Path(trial.output_dir), [name for name, _ in trial.eval_manifests], trial.seed),
        "steps": summary.get("steps"),
        "elapsed_seconds": summary.get("elapsed_seconds"),
        "device": summary.get("device"),
        "threads": summary["config"].get("num_threads"),
        "baseline_decoded_by": {name: scores["baseline"].get("decoded_by") for name, scores in summary["evals"].items()},
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
    job_name: str = "",
) -> tuple[list[dict], list[dict]]:
    """Launch every seed run as a Ray task (in a Ray job named ``job_name``) and collect
    results as they finish.

    Returns (finished, failed). A failed seed is recorded and the others go on: a verdict over
    fewer seeds is still informative, and the report names the failure.
    """
    import ray

    from sweeps.ray_init import init_local_ray, named_job

    started_here = not ray.is_initialized()
    if started_here and address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, job_config=named_job(job_name))
    elif started_here:
        init_local_ray(include_dashboard=False, log_to_driver=False, job_config=named_job(job_name))  # listens on 127.0.0.1 only
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(task_fn)
        pending = {task.remote(config.to_dict()): (seed, rerun, config) for seed, rerun, config in runs}
        reruns = sum(r for _, r, _ in runs)
        print(f"repro: {counted(len(runs), 'seed run')} to train ({counted(reruns, 'determinism rerun')}), "
              f"{cpus:g} CPU / {gpus:g} GPU each", flush=True)
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
    with atomic_output(path) as tmp:
        table.to_parquet(tmp, index=False)


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
            # A reused seed may have run with another --cpus-per-trial than its rerun (sweeps.repro.reuse).
            "threads": [main[rerun["seed"]].get("threads"), rerun.get("threads")],
        })
    return checks


def _where_they_differ(check: dict[str, Any]) -> str:
    """" (ran on cuda then cpu)", " (ran with 1 then 2 torch threads)", or "" when a seed and
    its rerun ran alike."""
    devices, threads = check.get("devices") or [], check.get("threads") or []
    if len(set(devices)) > 1:
        return f" (ran on {devices[0]} then {devices[1]})"
    if len(set(threads)) > 1 and None not in threads:
        return f" (ran with {threads[0]} then {threads[1]} torch threads)"
    return ""


def determinism_summary(baseline_check: dict[str, Any], reruns: list[dict[str, Any]]) -> dict[str, Any]:
    """``deterministic: yes/no``, kept apart from the verdict. Only a same-seed rerun can show
    "yes"; baselines that differ across seeds show "no" (decoding itself varied), identical
    ones alone show nothing about training. Without a rerun: "unknown" unless baselines differ."""
    parts, verdicts = [], []
    if baseline_check.get("checked"):
        if not baseline_check["identical"]:
            verdicts.append(False)
        parts.append("baseline hypotheses identical across seeds" if baseline_check["identical"]
                     else f"baseline hypotheses differ across seeds on {counted(baseline_check['count'], 'utterance')}")
    elif baseline_check.get("why"):
        parts.append(f"baseline across seeds not checked ({baseline_check['why']})")
    for check in reruns:
        verdicts.append(check["identical"])
        where = _where_they_differ(check)
        parts.append(f"seed {check['seed']} rerun gives identical hypotheses{where}" if check["identical"]
                     else f"seed {check['seed']} rerun differs on {counted(check['differing'], 'hypothesis', 'hypotheses')}{where}")
    deterministic = "no" if not all(verdicts) else ("yes" if reruns else "unknown")
    if not reruns:
        parts.append("no same-seed rerun")
    return {"deterministic": deterministic, "detail": "; ".join(parts),
            "baseline_across_seeds": baseline_check, "reruns": reruns}
