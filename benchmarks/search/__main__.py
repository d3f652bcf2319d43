"""``python -m benchmarks.search``: replay searchers on the search table, print how they did.

    python -m benchmarks.search                                  # the demo table, 200 replays each (about 30 s)
    python -m benchmarks.search --num-samples 8 16 --json out.json
    python -m benchmarks.search --searchers random tpe+asha --finalists 2 --race-seeds 1

Every searcher is replayed once per sampler seed on the same table; see docs/benchmarks.md
("Search benchmark") for what each column means.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks.search.replay import SearcherSpec
from trainable.config import REPO_ROOT
from trainable.files import atomic_write_json

DEFAULT_TABLE = REPO_ROOT / "benchmarks" / "data" / "demo_search_table.parquet"
DEFAULT_SWEEP = REPO_ROOT / "sweeps" / "configs" / "demo.yaml"
DEFAULT_SEARCHERS = (
    "grid", "random", "random+asha", "tpe", "tpe+canary",
    "tpe+asha", "tpe+asha+pruned", "tpe+asha+canary", "tpe+asha+pruned+canary", "tpe+asha+pruned+canary+dedup", "oracle+asha",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description="Replay searchers on the search table and print how they did.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", default=str(DEFAULT_TABLE), help="search table (python -m benchmarks.search_table builds it)")
    parser.add_argument("--replays", type=int, default=200, help="sampler seeds per searcher (default 200: at 50, random search's median moves by whole trials)")
    parser.add_argument("--first-seed", type=int, default=0, help="first sampler seed; replays use the next ones")
    parser.add_argument("--num-samples", type=int, nargs="+", help="trials per sweep; several values give a report each (default: the table's sweep, 16 on the demo table)")
    parser.add_argument("--searchers", nargs="+", default=list(DEFAULT_SEARCHERS), help="random (over the sweep's space), grid (the table in a random order), tpe, or oracle (TPE's random startup, then a good recipe: "
                             "a bound on TPE, not a searcher), then +asha, +pruned, +canary, +dedup (default: 11 searchers, grid to oracle+asha)")
    parser.add_argument("--sweep", metavar="CONFIG", help="the sweep whose ASHA, TPE startup trials and racing are replayed (default: "
                             f"{DEFAULT_SWEEP.relative_to(REPO_ROOT)} on the demo table, the sweep that built any other table); "
                             "the table gives the space, the points and the trial length")
    parser.add_argument("--startup-trials", type=int, help="TPE's random startup trials (default: the sweep's startup_trials, else its rule, a third of the budget, 2-10)")
    parser.add_argument("--grace-period", type=int, help="ASHA grace period in reports (default: the sweep's)")
    parser.add_argument("--reduction-factor", type=float, help="ASHA reduction factor (default: the sweep's)")
    parser.add_argument("--finalists", type=int, help="racing: how many top trials are retrained (default: the sweep's, 2 on the demo; 3 if a table does not say)")
    parser.add_argument("--race-seeds", type=int, help="racing: new seeds per finalist, from the table (default: the sweep's, 2 on the demo)")
    parser.add_argument("--canary-budget", type=float, help="most the canary WER may rise (default: the table's, 0.02 on the demo)")
    parser.add_argument("--truth", choices=("all-seeds", "held-out"), default="all-seeds",
                        help="what a recipe's true WER is: the mean over all its seeds (default), or over the seeds no replay observes: "
                             "not the sweep's seed, not the --race-seeds that racing retrains it with (needs a table with more extra seeds than --race-seeds)")
    parser.add_argument("--within", type=float, default=0.01, help="a recipe this close to the target's dev WER counts as found (default 0.01 = 1 point)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks.search.table import TableError

    try:
        check_args(args)
        specs = [SearcherSpec.parse(name) for name in args.searchers]
        report = run(args, specs)
    except (TableError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report["text"])
    if args.json:
        atomic_write_json(args.json, {k: v for k, v in report.items() if k != "text"})  # inf and NaN as null
        print(f"JSON: {args.json}")
    return 0


def check_args(args: argparse.Namespace) -> None:
    """Counts and rates a replay cannot use, refused with the flag named (argparse has already
    refused what is no number)."""
    least = [("--replays", args.replays, 1), ("--startup-trials", args.startup_trials, 1), ("--grace-period", args.grace_period, 1),
             ("--finalists", args.finalists, 0), ("--race-seeds", args.race_seeds, 0), ("--within", args.within, 0),
             ("--canary-budget", args.canary_budget, 0), *[("--num-samples", n, 1) for n in args.num_samples or []]]
    for flag, value, lowest in least:
        if value is not None and not value >= lowest:
            raise ValueError(f"{flag}: must be >= {lowest}, got {value}")
    if args.reduction_factor is not None and not args.reduction_factor > 1:
        raise ValueError(f"--reduction-factor: must be > 1, got {args.reduction_factor}")


def run(args: argparse.Namespace, specs: list[SearcherSpec]) -> dict:
    from benchmarks.search.replay import replay
    from benchmarks.search.summary import add_goals, format_report, summarise, table_facts
    from benchmarks.search.table import SearchTable, ground_truth, read_search_table

    started = time.perf_counter()
    table = read_search_table(args.table)
    if args.canary_budget is not None:
        table = SearchTable(table.rows, {**table.meta, "canary_budget": args.canary_budget})
    sweep = replayed_sweep(table.meta, args)
    racing = racing_for(sweep, args)
    truth = ground_truth(table, args.within, race_seeds=racing["seeds"] if args.truth == "held-out" else None)
    seeds = range(args.first_seed, args.first_seed + args.replays)
    budgets, facts = [], None
    where = sweep.get("config") or "the sweep that built the table"
    texts = [f"Replaying the ASHA, TPE startup trials and racing of {where} (flags override them) on {args.table}."]
    for num_samples in args.num_samples or [int(table.meta["num_samples"])]:
        settings = settings_for(table.meta, sweep, args, num_samples, racing)
        rows = []
        for spec in specs:
            outcomes = [replay(table, truth, spec, seed, settings) for seed in seeds]
            rows += [summarise(spec, outcomes, truth, racing) for racing in (False, True)]
        add_goals(rows)
        facts = facts or table_facts(table, truth, settings)
        budgets.append({"num_samples": num_samples, "settings": settings.__dict__, "searchers": rows})
        texts.append(format_report(facts, settings, rows, args.replays, table.canary_budget))
    seconds = time.perf_counter() - started
    texts.append(f"({len(specs)} searchers x {args.replays} replays x {len(budgets)} budget(s) in {seconds:.1f} s; table {args.table})")
    provenance = {key: table.meta.get(key) for key in ("commit", "built_at", "versions", "grid") if key in table.meta}
    return {"table": {"path": str(args.table), **provenance}, "facts": facts, "replays": args.replays,
            "first_seed": args.first_seed, "truth": args.truth, "budgets": budgets, "seconds": seconds, "text": "\n\n".join(texts)}


def replayed_sweep(meta: dict, args: argparse.Namespace) -> dict:
    """The scheduler, TPE startup trials and racing of the sweep being replayed: ``--sweep``'s,
    the demo sweep's for the demo table, else those the table's build recorded."""
    from pathlib import Path

    from sweeps.search.config import load_sweep_config

    path = args.sweep or (DEFAULT_SWEEP if Path(args.table).resolve() == DEFAULT_TABLE.resolve() else None)
    if path is None:
        return {key: meta.get(key) for key in ("scheduler", "racing", "startup_trials")}
    sweep = load_sweep_config(path)
    return {"scheduler": sweep.scheduler.to_dict(), "racing": sweep.racing.to_dict(), "startup_trials": sweep.startup_trials, "config": str(path)}


def racing_for(sweep: dict, args: argparse.Namespace) -> dict[str, int]:
    """Racing as the replayed sweep races (tables built before it was recorded: the sweep
    config's defaults), as the command line overrides it."""
    from sweeps.search.config import RacingConfig

    racing = {**RacingConfig().to_dict(), **(sweep.get("racing") or {})}
    return {"finalists": racing["finalists"] if args.finalists is None else args.finalists,
            "seeds": racing["seeds"] if args.race_seeds is None else args.race_seeds}


def settings_for(meta: dict, sweep: dict, args: argparse.Namespace, num_samples: int, racing: dict[str, int]):
    """The replay's settings: the replayed sweep's (``replayed_sweep``) as the command line
    overrides them; TPE's startup trials by the sweep's own rule
    (``sweeps.search.space.startup_trials``) unless the sweep or the command line sets them."""
    from benchmarks.search.replay import Settings
    from sweeps.search.space import startup_trials

    scheduler = sweep["scheduler"] if (sweep.get("scheduler") or {}).get("type") == "asha" else {}
    return Settings(
        num_samples=num_samples,
        startup_trials=args.startup_trials or startup_trials(num_samples, sweep.get("startup_trials")),
        points=tuple(meta["points_to_evaluate"]),
        max_t=int(meta["max_reports"]),
        grace_period=args.grace_period or int(scheduler.get("grace_period", 1)),
        reduction_factor=args.reduction_factor or float(scheduler.get("reduction_factor", 2.0)),
        finalists=racing["finalists"],
        race_seeds=racing["seeds"],
    )


if __name__ == "__main__":
    sys.exit(main())
