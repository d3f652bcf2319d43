"""``python -m benchmarks.search_table``: train every recipe of a grid through the sweep
machinery and store the results as the search table that ``python -m benchmarks.search`` replays.

    python -m benchmarks.search_table                        # the demo sweep's space on a grid (hours on 2 CPU cores)
    python -m benchmarks.search_table --grid grid.yaml       # {field: [values]} for each searched field
    python -m benchmarks.search_table --config sweeps/configs/demo.yaml trial.max_steps=100   # key=value overrides

A grid is a sweep: the builder writes a sweep YAML whose ``points_to_evaluate`` are every
grid recipe (``num_samples`` = their count, no scheduler, the base sweep's ``trial:`` with its
``eval_every``, so every trial leaves a learning curve) and runs ``python -m sweeps.run`` on
it. Then a sweep per extra seed retrains the best recipes (by single-seed final dev WER) with
that seed, so asking for more seeds later trains only the new ones. Interrupted? Run the same
command again: a finished sweep is skipped, an unfinished one continues with ``sweeps.run --resume``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sweeps.search.config import SweepConfig, load_sweep_config
from sweeps.search.experiment import RESULTS_ROOT  # where sweeps.run writes, relative to the working directory
from sweeps.search.trial import COMPLETED, COMPLETED_KEY, ERROR
from trainable.config import REPO_ROOT
from trainable.config_io import ConfigError, read_yaml
from trainable.metrics import metric_name

DEFAULT_CONFIG = REPO_ROOT / "sweeps" / "configs" / "demo.yaml"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "data" / "demo_search_table.parquet"
FINISHED = (COMPLETED, ERROR)  # sweeps' statuses of a trial that will not run again
VERSIONED = ("torch", "transformers", "peft", "ray", "optuna")


class BuildError(RuntimeError):
    """The table cannot be built as asked; the message says what to change."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_table", description="Train every recipe of a grid through the sweep machinery and store the search table.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override keys of the base sweep, as sweeps.run takes them")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="the sweep whose space is tabulated (default: sweeps/configs/demo.yaml)")
    parser.add_argument("--grid", help="YAML {searched field: [values]}; default: every choice, and --range-points values across each range")
    parser.add_argument("--range-points", type=int, default=4, help="grid values across a searched range without a grid of its own, log-spaced for a log range (default 4)")
    parser.add_argument("--extra-seeds", type=int, default=4, help="more seeds for the best recipes: the sweep's seed + 1, + 2, ... (default 4: racing retrains with 2, the other 2 are held out to grade it)")
    parser.add_argument("--extra-seed-recipes", type=int, default=16, help="how many of the best recipes (single-seed final dev WER) get them; 0: none (default 16)")
    parser.add_argument("--canary-set", help="the eval set whose WER rise is budgeted (default: the one in the sweep's max_wer_increase)")
    parser.add_argument("--name", default="demo-search-table", help="sweeps NAME-grid, NAME-seed43, ... go to results/ (default demo-search-table)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"the table (default {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--num-cpus", type=int, help="CPUs the sweeps' local Ray may use (default: all)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path, rows = build(args)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; run the same command again to continue (finished sweeps under {RESULTS_ROOT}/ are kept)", file=sys.stderr)
        return 130
    print(f"Search table: {path} ({len(rows)} rows, {rows['recipe'].nunique()} recipes, {rows['seconds'].sum() / 3600:.1f} trial-hours)")
    return 0


def build(args: argparse.Namespace):
    """Both sweeps (each skipped when already finished), then the table from their results."""
    started = time.monotonic()
    base = _load_sweep(args.config, args.overrides)
    if not base.trial.eval_every:
        raise BuildError("trial.eval_every is 0: trials would leave no learning curve for ASHA to replay; set it (the demo's is 50)")
    dev, canary, budget = eval_roles(base, args.canary_set)
    grid = read_grid(args.grid, base) if args.grid else default_grid(base, args.range_points)
    recipes = grid_recipes(grid)
    for point in base.points_to_evaluate:
        if dict(point) not in recipes:
            print(f"note: the sweep's first recipe {dict(point)} is not on the grid; replays run it as its nearest grid recipe")
    build_dir = RESULTS_ROOT / f"{args.name}-build"

    grid_sweep = sweep_for(base, f"{args.name}-grid", grid, recipes)
    grid_dir = run_sweep(grid_sweep, build_dir, args.num_cpus)
    rows = sweep_rows(grid_dir, list(grid), dev, canary, base.metric)

    seeds = [base.trial.seed + k for k in range(1, args.extra_seeds + 1)]
    best = best_recipes(rows, list(grid), args.extra_seed_recipes) if seeds else []
    sweeps = [grid_sweep["name"]]
    for seed in seeds if best else []:  # a sweep per seed: asking for more seeds later trains only the new ones
        seed_sweep = sweep_for(base, f"{args.name}-seed{seed}", {**grid, "seed": [seed]}, [{**recipe, "seed": seed} for recipe in best])
        seed_dir = run_sweep(seed_sweep, build_dir, args.num_cpus)
        rows = _concat(rows, sweep_rows(seed_dir, list(grid), dev, canary, base.metric))
        sweeps.append(seed_sweep["name"])

    meta = table_meta(base, grid, dev, canary, budget, seeds, len(best), sweeps, args)
    meta["build_seconds"] = earlier_build_seconds(args.out, meta) + time.monotonic() - started
    meta["trial_seconds"] = float(rows["seconds"].sum())
    from benchmarks.search.table import write_search_table

    return write_search_table(rows, meta, args.out), rows


def earlier_build_seconds(out: str, meta: dict[str, Any]) -> float:
    """The wall seconds already spent on this table: those of the table at ``out`` when it was
    built from the same grid and from sweeps this build reuses (a rerun that grows it by a seed,
    or only rewrites its metadata, adds to them); otherwise 0."""
    from benchmarks.search.table import TableError, read_search_table

    try:
        earlier = read_search_table(out).meta
    except (TableError, OSError, ValueError):
        return 0.0
    reused = earlier.get("grid") == meta["grid"] and set(earlier.get("sweeps", ())) <= set(meta["sweeps"])
    return float(earlier.get("build_seconds", 0.0)) if reused else 0.0


def eval_roles(base: Any, canary_set: str | None) -> tuple[str, str, float]:
    """Which eval set is "dev" (the one the sweep optimises), which is the "canary" (the one its
    budget guards), and that budget: read from the sweep, not assumed to be heldout/canary."""
    budgets = dict(base.max_wer_increase)
    if canary_set is None:
        if len(budgets) != 1:
            raise BuildError(f"the sweep budgets {len(budgets)} eval sets ({', '.join(budgets) or 'none'}); name one with --canary-set, "
                             "and give it a budget with max_wer_increase.NAME=0.02")
        canary_set = next(iter(budgets))
    if canary_set not in budgets:
        raise BuildError(f"--canary-set {canary_set}: the sweep has no max_wer_increase for it; add max_wer_increase.{canary_set}=0.02")
    return base.trial.primary_eval, canary_set, float(budgets[canary_set])


def default_grid(base: Any, range_points: int) -> dict[str, list[Any]]:
    """Every choice as it is; a range with a ``grid`` as the values its trials train; any
    other range as ``range_points`` values from low to high (log-spaced for a log range,
    three significant digits, whole numbers for an int range)."""
    import numpy as np

    grid = {}
    for param in base.search:
        if param.kind == "choice" or param.grid:
            grid[param.name] = list(param.choices or param.grid_values())
            continue
        spaced = (np.geomspace if param.log else np.linspace)(param.low, param.high, range_points)
        values = [int(round(v)) for v in spaced] if param.kind == "int" else [float(f"{v:.3g}") for v in spaced]
        grid[param.name] = list(dict.fromkeys(values))
    return grid


def read_grid(path: str, base: Any) -> dict[str, list[Any]]:
    try:
        grid = read_yaml(path)
    except ConfigError as error:  # no such file, not text, not YAML
        raise BuildError(str(error)) from None
    searched = list(base.searched_names)
    if not isinstance(grid, dict) or sorted(grid) != sorted(searched):
        raise BuildError(f"{path}: give a list of values for each searched field and no other: {', '.join(searched)}")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise BuildError(f"{path}: {name}: a non-empty list of values")
    return {name: grid[name] for name in searched}  # in the search space's order


def grid_recipes(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def sweep_for(base: Any, name: str, search: dict[str, list[Any]], points: list[dict[str, Any]]) -> dict[str, Any]:
    """The base sweep (its trial recipe, resources, budget) running exactly ``points``."""
    raw = base.to_dict()
    trial = base.trial.resolved().to_dict()  # absolute paths: the YAML lives in a build folder
    raw["trial"] = {key: trial[key] for key in raw["trial"]}
    raw.update(name=name, search={field: {"choices": values} for field, values in search.items()},
               points_to_evaluate=points, num_samples=len(points), scheduler={"type": "none"},
               racing="none")  # every recipe runs to the end, once per point: no early stopping, no race
    SweepConfig.from_dict(raw)  # fail here, with the key named, not in a subprocess
    return raw


def run_sweep(raw: dict[str, Any], build_dir: Path, num_cpus: int | None) -> Path:
    """Run (or resume, or skip when finished) one sweep with ``python -m sweeps.run``."""
    import yaml

    name, results_dir = raw["name"], RESULTS_ROOT / raw["name"]
    if sweep_finished(results_dir, raw):
        print(f"Sweep {name}: finished earlier, {raw['num_samples']} trials in {results_dir}/trials.parquet")
        return results_dir
    config = build_dir / f"{name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"# Generated by python -m benchmarks.search_table: {raw['num_samples']} recipes, one trial each.\n"
                      + yaml.safe_dump(raw, sort_keys=False))
    command = [sys.executable, "-m", "sweeps.run", "--config", str(config.absolute()), "--name", name]
    if (results_dir / "run.json").is_file():
        command.append("--resume")
    if num_cpus:
        command += ["--num-cpus", str(num_cpus)]
    print(f"Sweep {name}: {' '.join(command[1:])}", flush=True)
    returncode = run_sweep_command(command)
    if not sweep_finished(results_dir, raw):
        raise BuildError(f"sweep {name} stopped before all {raw['num_samples']} trials finished (exit code {returncode}); "
                         "run the same command again to resume it")
    return results_dir


def run_sweep_command(command: list[str]) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, env=env).returncode


def sweep_finished(results_dir: Path, raw: dict[str, Any]) -> bool:
    """Every trial of this very sweep done (completed or errored). The same name with another
    grid is refused: its trials would mix into the table."""
    import pandas as pd

    trials_file, saved_file = results_dir / "trials.parquet", results_dir / "sweep.yaml"
    if not trials_file.is_file() or not saved_file.is_file():
        return False
    if _load_sweep(str(saved_file), []).to_dict() != SweepConfig.from_dict(raw).to_dict():
        raise BuildError(f"{results_dir} holds a different sweep (another grid or recipe); delete it or pick another --name")
    trials = pd.read_parquet(trials_file, columns=["status"])
    return len(trials) == raw["num_samples"] and trials["status"].isin(FINISHED).all()


def sweep_rows(results_dir: Path, fields: list[str], dev: str, canary: str, metric: str):
    """One table row per trial: its searched values and seed, its learning curve from Ray's
    saved experiment, its final WERs from the sweep's trials.parquet."""
    import pandas as pd
    from ray.tune import ExperimentAnalysis

    from benchmarks.search.table import recipe_id

    experiment = json.loads((results_dir / "run.json").read_text())["experiment_path"]
    histories = ExperimentAnalysis(experiment).trial_dataframes
    rows = []
    for trial in pd.read_parquet(results_dir / "trials.parquet").to_dict("records"):
        row = result_columns(trial, fields, dev, canary)
        row["curve_steps"], row["dev_wer_curve"] = learning_curve(histories.get(trial["trial_id"]), metric)
        row["recipe"], row["sweep"] = recipe_id({field: row[field] for field in fields}), results_dir.name
        rows.append(row)
    return pd.DataFrame(rows)


def result_columns(trial: dict[str, Any], fields: list[str], dev: str, canary: str) -> dict[str, Any]:
    """The one place that knows the sweep's results columns (sweeps/search/results.py): a
    trials.parquet row to the table's columns. Eval sets by name: ``<set>_<system>_wer`` (``metric_name``)."""
    from sweeps.search.config import results_column
    from sweeps.search.racing import plain_value

    nan = float("nan")
    searched = {field: plain_value(trial[results_column(field)]) for field in fields}
    return {
        **searched,
        "seed": int(trial["seed"]),
        "completed": trial["status"] == COMPLETED and bool(trial.get(COMPLETED_KEY, True)),
        "dev_tuned_wer": trial.get(metric_name(dev, "tuned"), nan), "dev_baseline_wer": trial.get(metric_name(dev, "baseline"), nan),
        "canary_tuned_wer": trial.get(metric_name(canary, "tuned"), nan), "canary_baseline_wer": trial.get(metric_name(canary, "baseline"), nan),
        "steps": trial.get("steps"), "seconds": trial.get("wall_seconds", nan), "trial_id": trial["trial_id"],
    }


def learning_curve(history: Any, metric: str) -> tuple[list[int], list[float]]:
    """(step, dev WER) of every report, in report order; the final report is the last."""
    if history is None or metric not in getattr(history, "columns", ()):
        return [], []
    reports = history.dropna(subset=[metric]).sort_values("training_iteration")
    return [int(s) for s in reports["step"]], [float(w) for w in reports[metric]]


def best_recipes(rows: Any, fields: list[str], count: int) -> list[dict[str, Any]]:
    """The ``count`` recipes with the best single-seed final dev WER (grid order on a tie)."""
    from sweeps.search.racing import plain_value

    done = rows[rows["completed"]].sort_values("dev_tuned_wer", kind="stable")
    return [{field: plain_value(row[field]) for field in fields} for _, row in done.head(max(count, 0)).iterrows()]


def table_meta(base: Any, grid: dict, dev: str, canary: str, budget: float, seeds: list[int], seeded: int,
               sweeps: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """What the replay reads (the sweep as it searches) and where the numbers came from."""
    search = {p.name: {**p.to_dict(), "kind": p.kind} for p in base.search}
    return {
        "search": search, "points_to_evaluate": [dict(p) for p in base.points_to_evaluate],
        "num_samples": base.num_samples, "scheduler": base.scheduler.to_dict(), "racing": base.racing.to_dict(), "max_reports": base.max_reports,
        "eval_every": base.trial.eval_every, "max_steps": base.trial.max_steps, "sweep_seed": base.trial.seed,
        "canary_budget": budget, "dev_eval_set": dev, "canary_eval_set": canary, "metric": base.metric,
        "sampler_seed": base.seed, "max_concurrent_trials": base.max_concurrent_trials,
        "grid": grid, "extra_seeds": seeds, "extra_seed_recipes": seeded, "sweeps": sweeps,
        "base_config": str(args.config), "overrides": list(args.overrides),
        "commit": _git_commit(), "versions": _versions(), "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _load_sweep(path: str, overrides: list[str]):
    try:
        return load_sweep_config(path, overrides)
    except ConfigError as error:
        raise BuildError(str(error)) from None


def _concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def _git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"sha": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in VERSIONED:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


if __name__ == "__main__":
    sys.exit(main())
