"""Figures over many replays of each searcher, facts about the table itself, and printing.

Quantiles are order statistics (numpy's ``inverted_cdf``: no interpolation), so a median of
steps-to-reach is +inf exactly when more than half the replays never reach a good recipe.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.search.replay import Outcome, SearcherSpec, Settings
from benchmarks.search.table import GroundTruth, SearchTable
from sweeps.budget import over_budget

# Goals for the sweep's searcher: half random search's compute to a good recipe, a good
# recipe chosen in 80 % of replays, a feasible one in 90 %.
GOALS = {"reach_vs_random": 0.5, "chosen_within": 0.8, "chosen_feasible": 0.9}


def quantiles(values: list[float]) -> dict[str, float]:
    if not len(values):
        return {"median": math.nan, "q25": math.nan, "q75": math.nan}
    q25, median, q75 = np.quantile(np.asarray(values, dtype=float), [0.25, 0.5, 0.75], method="inverted_cdf")
    return {"median": float(median), "q25": float(q25), "q75": float(q75)}


def summarise(spec: SearcherSpec, outcomes: list[Outcome], truth: GroundTruth, racing: bool) -> dict[str, Any]:
    """One row of the output: a searcher with or without racing, over its replays."""
    n = len(outcomes)
    chosen = [o.race.winner if racing else o.chosen for o in outcomes]
    picked = [recipe for recipe in chosen if recipe is not None]
    return {
        "searcher": spec.name + (" +race" if racing else ""),
        "racing": racing,
        "bound": spec.is_bound,
        "reach_steps": quantiles([o.reach_steps for o in outcomes]),
        "reach_steps_each": [o.reach_steps for o in outcomes],  # one per sampler seed, in seed order
        "reached": sum(math.isfinite(o.reach_steps) for o in outcomes) / n,
        "chosen_dev_wer": quantiles([truth.dev_wer(r) for r in picked]),
        "chosen_feasible": sum(truth.feasible(r) for r in picked) / n,
        "chosen_within": sum(r in truth.good for r in picked) / n,
        "chosen_target": sum(r == truth.target for r in picked) / n,
        "chose_none": (n - len(picked)) / n,
        "compute_steps": quantiles([o.search_steps + (o.race.steps if racing else 0) for o in outcomes]),
        "stopped_good": sum(o.stopped_good for o in outcomes) / n,
        "short_of_seeds": sum(o.race.short_of_seeds for o in outcomes) / n if racing else 0.0,
    }


def add_goals(rows: list[dict[str, Any]], baseline: str = "random", resamples: int = 2000) -> None:
    """Each row's median steps-to-reach over random search's, with a 95 % bootstrap interval,
    and whether the searcher goals hold (on the point estimate)."""
    reference = {row["racing"]: row for row in rows if row["searcher"].split(" ")[0] == baseline}
    for row in rows:
        base = reference.get(row["racing"])
        ratio = _ratio(row["reach_steps"]["median"], base["reach_steps"]["median"]) if base else math.nan
        row["reach_vs_random"] = ratio
        row["reach_vs_random_ci"] = ratio_interval(row["reach_steps_each"], base["reach_steps_each"], resamples) if base else [math.nan, math.nan]
        row["meets_goals"] = not row["bound"] and bool(
            ratio <= GOALS["reach_vs_random"] and row["chosen_within"] >= GOALS["chosen_within"]
            and row["chosen_feasible"] >= GOALS["chosen_feasible"]
        )


def ratio_interval(steps: list[float], reference: list[float], resamples: int = 2000, seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of median(steps) / median(reference): the sampler seeds
    are resampled, the same draw for both (replay i of each searcher used seed i, and TPE's
    startup trials are random search's draws with that seed). How far the ratio moves with
    the replays drawn; the table itself is held fixed."""
    steps, reference = np.asarray(steps, dtype=float), np.asarray(reference, dtype=float)
    if len(steps) != len(reference) or not len(steps):
        return [math.nan, math.nan]
    draws = np.random.default_rng(seed).integers(0, len(steps), size=(resamples, len(steps)))
    medians = np.quantile(steps[draws], 0.5, axis=1, method="inverted_cdf")
    reference_medians = np.quantile(reference[draws], 0.5, axis=1, method="inverted_cdf")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(np.isinf(reference_medians), np.nan, medians / reference_medians)
    if np.isnan(ratios).mean() > 0.025:  # random search's median is infinite too often to bound it
        return [math.nan, math.nan]
    low, high = np.nanquantile(ratios, [0.025, 0.975], method="inverted_cdf")
    return [float(low), float(high)]


def table_facts(table: SearchTable, truth: GroundTruth, settings: Settings) -> dict[str, Any]:
    """What the table says before any searcher runs: the target, how many recipes are good,
    whether the whole grid's single-seed winner is the target, and how well the WER at
    ASHA's first rung predicts the final WER (would the rung kill a winner?)."""
    recipes = truth.recipes
    target = recipes.loc[truth.target]
    runs = {r: table.sweep_run(r) for r in table.recipes}
    done = [r for r, run in runs.items() if run.completed and not over_budget(run.canary_rise, table.canary_budget)]
    grid_winner = min(done, key=lambda r: runs[r].dev_wer) if done else None
    return {
        "within": truth.within,
        "recipes": len(table.recipes),
        "rows": len(table.rows),
        "seeds_per_recipe": {int(k): int(v) for k, v in recipes["seeds"].value_counts().sort_index().items()},
        "held_out_recipes": int(recipes["held_out"].sum()) if truth.held_out else None,
        "feasible_recipes": int(recipes["feasible"].sum()),
        "good_recipes": len(truth.good),
        "target": {"recipe": truth.target, "dev_wer": float(target["dev_wer"]), "canary_rise": float(target["canary_rise"]), "seeds": int(target["seeds"])},
        "grid_single_seed_winner": None if grid_winner is None else {
            "recipe": grid_winner, "is_target": grid_winner == truth.target, "dev_wer": truth.dev_wer(grid_winner),
            "feasible": truth.feasible(grid_winner), "within": grid_winner in truth.good,
        },
        "first_rung": _first_rung(runs, truth, settings),
    }


def _first_rung(runs: dict, truth: GroundTruth, settings: Settings) -> dict[str, Any] | None:
    report = settings.grace_period
    curves = {r: run for r, run in runs.items() if run.completed and len(run.dev_wer_curve) > report}
    if not curves:
        return None
    import pandas as pd

    frame = pd.DataFrame({"rung": [run.dev_wer_curve[report - 1] for run in curves.values()],
                          "final": [run.dev_wer for run in curves.values()]}, index=list(curves))
    ranks = frame["rung"].rank(method="min")
    constant = frame.nunique().min() < 2  # a rank correlation is undefined (tiny test tables)
    return {
        "report": report,
        "step": int(np.median([run.curve_steps[report - 1] for run in curves.values()])),
        "spearman": math.nan if constant else float(frame["rung"].corr(frame["final"], method="spearman")),
        "target_rank": int(ranks[truth.target]) if truth.target in ranks else None,
        "good_ranks": sorted(int(ranks[r]) for r in truth.good if r in ranks),
        "recipes": len(frame),
    }


def format_report(facts: dict[str, Any], settings: Settings, rows: list[dict[str, Any]], replays: int, budget: float) -> str:
    lines = [_facts_text(facts, budget), ""]
    lines.append(
        f"{settings.num_samples} trials per sweep, {replays} replays each, one trial at a time; ASHA: grace period "
        f"{settings.grace_period} reports, reduction factor {settings.reduction_factor:g}, max_t {settings.max_t}; "
        f"TPE: {settings.startup_trials} random startup trials; racing: top {settings.finalists}, {settings.race_seeds} new seeds each."
    )
    within = f"within {100 * facts['within']:g} pt"
    header = ("searcher", "reach steps: median [IQR]", "reached", "vs random [95% CI]", "chosen dev WER: median [IQR]",
              "feasible", within, "target", "compute steps", "ASHA stopped a good one")
    body = [(
        row["searcher"], _iqr(row["reach_steps"], _steps), _pct(row["reached"]), _ratio_text(row["reach_vs_random"], row["reach_vs_random_ci"]),
        _iqr(row["chosen_dev_wer"], _wer), _pct(row["chosen_feasible"]), _pct(row["chosen_within"]),
        _pct(row["chosen_target"]), _steps(row["compute_steps"]["median"]), _pct(row["stopped_good"]),
    ) for row in rows]
    lines += _markdown_table(header, body)
    lines.append("")
    met = [row["searcher"] for row in rows if row["meets_goals"]]
    lines.append(f"Searcher goals (reach <= 0.5x random, >= 80 % {within}, >= 90 % feasible): "
                 + (f"met by {', '.join(met)}." if met else "met by none."))
    if any(row["bound"] for row in rows):
        lines.append(f"oracle: a bound, not a searcher: TPE's {settings.startup_trials} random startup trials (the same draws), then a good "
                     "recipe that ASHA lets finish; TPE at this startup cannot reach a good recipe in fewer steps.")
    short = [f"{row['searcher']} ({_pct(row['short_of_seeds'])} of replays)" for row in rows if row["short_of_seeds"] > 0]
    if short:
        lines.append(f"Racing found fewer new seeds in the table than asked for some finalists in: {', '.join(short)}. "
                     "Those finalists were raced on the seeds there are (a one-seed recipe on its one seed, at no "
                     "retraining cost), which flatters those rows' racing figures.")
    return "\n".join(lines)


def _facts_text(facts: dict[str, Any], budget: float) -> str:
    seeds = facts["seeds_per_recipe"]
    target, winner, rung = facts["target"], facts["grid_single_seed_winner"], facts["first_rung"]
    spread = ", ".join(f"{count} with {k} seed{'s' if k > 1 else ''}" for k, count in seeds.items())
    if facts["held_out_recipes"] is None:
        truth = "a recipe's truth is the mean over its seeds, so a one-seed recipe's truth is that seed"
    else:
        truth = (f"held out: for {facts['held_out_recipes']} recipes the truth is the mean over the seeds no replay observes, "
                 "the rest keep the seeds they have")
    lines = [
        f"Table: {facts['recipes']} recipes ({spread} in the truth; {truth}); "
        f"{facts['feasible_recipes']} keep the canary budget (+{100 * budget:g} points) on average.",
        f"Target: {target['recipe']}: dev WER {_wer(target['dev_wer'])}, canary {100 * target['canary_rise']:+.2f} points "
        f"({target['seeds']} seed{'s' if target['seeds'] > 1 else ''}); {facts['good_recipes']} feasible recipes within "
        f"{_points(facts['within'])} of it (the good ones).",
    ]
    if winner:
        verdict = "the target" if winner["is_target"] else f"not the target (true dev WER {_wer(winner['dev_wer'])}, " + (
            "feasible" if winner["feasible"] else "infeasible on average") + (", good)" if winner["within"] else ", not good)")
        lines.append(f"Whole grid, one seed each (the sweep's rule): winner {winner['recipe']}: {verdict}.")
    if rung:
        lines.append(
            f"ASHA's first rung (report {rung['report']}, step {rung['step']}): Spearman {rung['spearman']:.2f} between dev WER "
            f"there and at the end over {rung['recipes']} recipes; the target ranks {rung['target_rank']} there, "
            f"the good recipes {rung['good_ranks']}."
        )
    return "\n".join(lines)


def _points(wer: float) -> str:
    return f"{100 * wer:g} point" + ("" if 100 * wer == 1 else "s")


def _markdown_table(header: tuple, body: list[tuple]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)]


def _ratio(value: float, reference: float) -> float:
    """value / reference; undefined (NaN) when the reference never reached the target in
    most replays (an infinite median), since any finite value over it would read as 0."""
    if math.isnan(value) or math.isnan(reference) or math.isinf(reference):
        return math.nan
    return value / reference if reference else math.nan


def _ratio_text(ratio: float, interval: list[float]) -> str:
    if math.isnan(ratio):
        return "-"
    return f"{ratio:.2f}" + ("" if any(math.isnan(x) for x in interval) else f" [{interval[0]:.2f}, {interval[1]:.2f}]")


def _iqr(q: dict[str, float], fmt) -> str:
    return f"{fmt(q['median'])} [{fmt(q['q25'])}, {fmt(q['q75'])}]"


def _steps(value: float) -> str:
    return "-" if math.isnan(value) else "inf" if math.isinf(value) else f"{value:,.0f}"


def _wer(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}%"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"
