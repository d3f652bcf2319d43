"""What a repro run hands on: verdict.json, report.md, two plots and NIST trn files.

Kept apart from the statistics (``significance``) and from the seed runs (``seeds``)
so ``--from-scores`` can rebuild every file here from a stored scores table alone. Every file is
written atomically (temporary file, then rename), and nothing here adds a timestamp, so the same
scores and bootstrap seed always give byte-identical verdict.json and report.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from sweeps.budget import WER_SLACK
from sweeps.repro.error_report import pooled_error_analysis, render_error_analysis, sclite_hint, write_trn_files
from sweeps.repro.figures import beside, listing, percent, points, probability
from sweeps.repro.significance import (
    MIN_POI, MIN_SEEDS, MIN_UNITS, Analysis, BudgetResult, SeedResult, character_error_rates, eval_sets_in_order, orthographic_wers, plain_wers,
)
from sweeps.wording import counted
from trainable.files import atomic_output, atomic_write_json, atomic_write_text

SEED_PLOT = "seed_deltas.png"
BOOTSTRAP_PLOT = "mean_delta_bootstrap.png"


# --------------------------------------------------------------------------- verdict.json


def verdict_record(
    analysis: Analysis, table: Any, determinism: dict[str, Any], budgets: list[BudgetResult], selection: dict[str, Any],
) -> dict[str, Any]:
    """The headline keys (verdict ... recommended) first, then the extras a reader needs to trust them.
    ``selection`` holds ``selection_bias``, ``selected_on`` and ``confirmed_on``."""
    other_eval_sets = {name: plain_wers(table, name) for name in eval_sets_in_order(table) if name != analysis.eval_set}
    unbudgeted_worse = _unbudgeted_worse(other_eval_sets, {b.eval_set for b in budgets})
    record = {
        "verdict": analysis.verdict,
        "verdict_rule": analysis.verdict_rule,
        "underpowered": analysis.power.underpowered,
        "mean_delta": analysis.mean_delta,
        "ci": analysis.ci,
        "poi": analysis.poi,
        "deterministic": determinism.get("deterministic", "unknown"),
        "baseline_wer": analysis.baseline_wer,
        "tuned_wer_mean": analysis.tuned_wer_mean,
        "tuned_wer_sd": analysis.tuned_wer_sd,
        "seeds": [_seed_record(s) for s in analysis.seeds],
        "selection_bias": selection.get("selection_bias"),
        "budgets": {b.eval_set: _budget_record(b) for b in budgets},
        "recommended": recommended(analysis, budgets, selection, unbudgeted_worse),
        "sentence": verdict_sentence(analysis, budgets, selection),
        "eval_set": analysis.eval_set,
        "selected_on": selection.get("selected_on"),
        "confirmed_on": selection.get("confirmed_on"),
        "sd_delta": analysis.sd_delta,
        "underpowered_reasons": analysis.power.reasons,
        "needed": analysis.power.needed,
        "min_effect": analysis.min_effect,
        "min_effect_relative": analysis.min_effect_relative,
        "resampling_unit": analysis.unit,
        "resampling_units": analysis.units,
        "utterances": analysis.utterances,
        "ref_words": analysis.ref_words,
        "dropped_empty_references": analysis.dropped_empty,
        "resamples": analysis.resamples,
        "bootstrap_seed": analysis.bootstrap_seed,
        "orthographic": orthographic_wers(table, analysis.eval_set),
        "cer": character_error_rates(table, analysis.eval_set),
        "determinism": determinism,
        "other_eval_sets": other_eval_sets,
        "error_analysis": pooled_error_analysis(table, analysis.eval_set),
    }
    record["recommendation"] = _recommendation(analysis, budgets, record, unbudgeted_worse)  # "yes (...)" or "no (reasons)"
    return record


def recommended(
    analysis: Analysis, budgets: list[BudgetResult], selection: dict[str, Any], unbudgeted_worse: Sequence[str] = (),
) -> bool:
    """A recipe to ship: a stable gain on enough seeds and held-out units to trust (a verdict on
    fewer than 5 seeds is a sign test weaker than p = 0.05), every budgeted eval set shown within
    its budget, no eval set without a budget worse on most seeds (nothing says whether that is
    acceptable: the warning below the headline would undercut a "yes"), and not on the set the
    sweep selected it on (selection is not confirmation)."""
    return (analysis.verdict == "stable gain" and not analysis.power.too_few and not unbudgeted_worse
            and all(b.decision == "within budget" for b in budgets) and selection.get("selection_bias") is not True)


def _budget_record(budget: BudgetResult) -> dict[str, Any]:
    return {
        "decision": budget.decision, "rise_mean": budget.rise_mean, "upper_95": budget.upper_95, "lower_95": budget.lower_95,
        "limit": budget.limit, "seed_rises": budget.seed_rises, "seeds_over": budget.seeds_over, "needed": budget.needed,
        "resampling_unit": budget.unit, "resampling_units": budget.units, "utterances": budget.utterances,
        "ref_words": budget.ref_words, "dropped_empty_references": budget.dropped_empty,
    }


def _seed_record(seed: SeedResult) -> dict[str, Any]:
    return {
        "seed": seed.seed, "delta": seed.delta, "ci": seed.ci, "poi": seed.poi, "tuned_wer": seed.tuned_wer,
        "baseline_wer": seed.baseline_wer, "errors_removed": seed.errors_removed, "errors_added": seed.errors_added,
        "utterances_better": seed.utterances_better, "utterances_worse": seed.utterances_worse,
    }


# --------------------------------------------------------------------------- the sentence


def verdict_sentence(analysis: Analysis, budgets: list[BudgetResult], selection: dict[str, Any]) -> str:
    """The verdict with its numbers, where it was confirmed, and every budget decision, in one
    sentence a reviewer can quote."""
    a = analysis
    n = len(a.seeds)
    (mean, low, high), _ = beside([a.mean_delta, *a.ci], 0.0, sign=True)
    (tuned,), baseline = beside([a.tuned_wer_mean], a.baseline_wer)
    numbers = (
        f"mean delta {mean} WER points over {counted(n, 'seed')} "
        f"(baseline {baseline}%, tuned {tuned}%{f' ± {points(a.tuned_wer_sd)} sd' if n > 1 else ''}), "
        f"95% CI [{low}, {high}], POI {probability(a.poi, MIN_POI)}"
    )
    sentence = f"{a.verdict.capitalize()} on {a.eval_set}{_where_confirmed(selection, a.verdict)}: {numbers}; {verdict_reason(a)}."
    if budgets:
        sentence += " Budgets: " + "; ".join(budget_clause(b) for b in budgets) + "."
    if a.power.underpowered:
        sentence += f" Underpowered ({'; '.join(a.power.reasons)})."
    return sentence


def verdict_reason(a: Analysis) -> str:
    """The rule that decided the verdict (``Analysis.verdict_rule``), in the terms of this case."""
    deltas = [s.delta for s in a.seeds]
    (lowest, highest), _ = beside([min(deltas), max(deltas)], 0.0, sign=True)
    spread = f"per-seed deltas from {lowest} to {highest}"
    if a.verdict_rule == "seeds_disagree":
        above = [s.seed for s in a.seeds if s.ci[0] > 0]
        below = [s.seed for s in a.seeds if s.ci[1] < 0]
        lie = "lies" if len(above) == 1 else "lie"
        return f"seeds significantly disagree: {_cis_of(above)} {lie} above 0, {_cis_of(below)} below ({spread})"
    if a.verdict_rule == "opposite_seed":
        against = [s.seed for s in a.seeds if s.delta * a.mean_delta < 0]
        return f"the CI excludes 0 but {_seeds(against)} went the other way ({spread})"
    if a.verdict_rule == "seed_not_improved":
        return f"the CI lies above 0, but {_seeds([s.seed for s in a.seeds if s.delta <= 0])} did not improve"
    if a.verdict_rule == "poi_below_95":
        return f"the CI lies above 0, but POI {probability(a.poi, MIN_POI)} < {MIN_POI}"
    return {
        "ci_below_0": "the CI lies below 0: the tuned adapter is worse",
        "all_seeds_improve": "every seed improves and the CI lies above 0",
        "ci_includes_0": "the CI includes 0",
    }[a.verdict_rule]


def _seeds(seeds: list[int]) -> str:
    """``seed 4``, ``seeds 3 and 4``."""
    return f"seed{'s' if len(seeds) != 1 else ''} {listing(seeds)}"


def _cis_of(seeds: list[int]) -> str:
    """``the CI of seed 2``, ``the CIs of seeds 0, 1 and 3``."""
    return f"the CI{'s' if len(seeds) != 1 else ''} of {_seeds(seeds)}"


def _where_confirmed(selection: dict[str, Any], verdict: str) -> str:
    """Whether the tested set is the one the sweep chose the recipe on: if so the gain is the
    best of many noisy scores there, and the headline must say it is inflated."""
    selected = (selection.get("selected_on") or {}).get("name")
    if selection.get("selection_bias") is True:
        measured = "the delta" if verdict == "regression" else "the gain"  # a regression has no gain to inflate
        return (f", the set the sweep selected this recipe on, so {measured} is biased upward (winner's curse; "
                "confirm on an untouched set with --confirm-on NAME=PATH)")
    if selection.get("selection_bias") is False:
        return f", which the sweep did not select on (it selected on {selected})"
    return ""


def budget_clause(budget: BudgetResult) -> str:
    """``canary within budget (mean rise +0.50 points, upper 95% bound +1.20 <= +2.00)``."""
    b = budget
    rise = f"mean rise {points(b.rise_mean, True)} points"
    (lower, upper), limit = budget_bounds(b)
    if b.decision == "within budget":
        return f"{b.eval_set} within budget ({rise}, upper 95% bound {upper} <= {limit})"
    if b.decision == "over budget":
        return f"{b.eval_set} over budget ({rise}, lower 95% bound {lower} > {limit})"
    return f"{b.eval_set} budget inconclusive ({rise}, 95% bounds [{lower}, {upper}] straddle {limit})"


def budget_bounds(budget: BudgetResult) -> tuple[list[str], str]:
    """The one-sided 95% bounds and the limit in signed points, each bound on its side of the
    limit as the decision compares them (within the budget's slack)."""
    return beside([budget.lower_95, budget.upper_95], budget.limit, sign=True, tolerance=WER_SLACK)


# --------------------------------------------------------------------------- plots


def plot_seed_deltas(analysis: Analysis, path: Path) -> None:
    """Each seed's delta with its paired-bootstrap CI, the pooled mean with its two-level CI,
    zero and the minimum effect of interest: disagreement between seeds is visible at a glance."""
    plt = _pyplot()
    seeds = analysis.seeds
    labels = [str(s.seed) for s in seeds] + ["mean"]
    values = [100 * s.delta for s in seeds] + [100 * analysis.mean_delta]
    lows = [100 * s.ci[0] for s in seeds] + [100 * analysis.ci[0]]
    highs = [100 * s.ci[1] for s in seeds] + [100 * analysis.ci[1]]
    figure, axis = plt.subplots(figsize=(max(4.0, 0.8 * len(labels) + 2), 3.6))
    for x, (value, low, high) in enumerate(zip(values, lows, highs)):
        color = "black" if x == len(seeds) else "tab:blue"
        axis.errorbar([x], [value], yerr=[[value - low], [high - value]], fmt="o", color=color, capsize=4)
    axis.axhline(0, color="grey", linewidth=1)
    if analysis.min_effect > 0:
        axis.axhline(100 * analysis.min_effect, color="tab:green", linestyle=":", linewidth=1, label="minimum effect")
        axis.legend(loc="best", fontsize=8)
    axis.set_xticks(range(len(labels)), labels)
    axis.set_xlabel("seed")
    axis.set_ylabel("delta (WER points, + = better)")
    axis.set_title(f"{analysis.eval_set}: baseline - tuned WER, 95% CI")
    _save(figure, path)


def plot_mean_distribution(analysis: Analysis, path: Path) -> None:
    """The two-level bootstrap distribution of the mean delta, with its CI and zero marked."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.6))
    axis.hist(100 * analysis.mean_draws, bins=60, color="tab:blue", alpha=0.8)
    for bound in analysis.ci:
        axis.axvline(100 * bound, color="black", linestyle="--", linewidth=1)
    axis.axvline(0, color="tab:red", linewidth=1)
    axis.set_xlabel("mean delta over seeds (WER points, + = better)")
    axis.set_ylabel("resamples")
    axis.set_title(f"{analysis.resamples} resamples of seeds and {analysis.unit}s; POI {probability(analysis.poi, MIN_POI)}")
    _save(figure, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    _pyplot().close(figure)


# --------------------------------------------------------------------------- report.md


def changed_predictions(table: Any, eval_set: str, seed: int, limit: int = 6) -> list[dict[str, Any]]:
    """Utterances whose hypothesis changed between baseline and tuned for one seed: the largest
    fixes first, then the largest breakages, so a reader sees both what improved and what broke."""
    rows = table[(table["eval_set"] == eval_set) & (table["seed"] == seed)]
    pairs = rows.pivot(index="utterance_id", columns="system", values=["hypothesis", "errors", "reference", "speaker"])
    changed = pairs[pairs[("hypothesis", "baseline")] != pairs[("hypothesis", "tuned")]]
    samples = [
        {
            "utterance_id": str(utterance), "speaker": str(row[("speaker", "baseline")]),
            "reference": str(row[("reference", "baseline")]),
            "baseline": str(row[("hypothesis", "baseline")]), "tuned": str(row[("hypothesis", "tuned")]),
            "baseline_errors": int(row[("errors", "baseline")]), "tuned_errors": int(row[("errors", "tuned")]),
        }
        for utterance, row in changed.iterrows()
    ]
    fixed = sorted((s for s in samples if s["tuned_errors"] <= s["baseline_errors"]), key=lambda s: (s["tuned_errors"] - s["baseline_errors"], s["utterance_id"]))
    broken = sorted((s for s in samples if s["tuned_errors"] > s["baseline_errors"]), key=lambda s: (s["baseline_errors"] - s["tuned_errors"], s["utterance_id"]))
    take_broken = min(len(broken), limit // 2)
    return fixed[: limit - take_broken] + broken[:take_broken]


def render_report(
    analysis: Analysis, record: dict[str, Any], table: Any, run: dict[str, Any], config: dict[str, Any] | None,
    budgets: list[BudgetResult],
) -> str:
    """report.md: the verdict first, then the run, the recipe, every seed and the evidence behind it."""
    sections = [
        f"# Repro report: {run.get('name') or analysis.eval_set}",
        _verdict_section(analysis, record, budgets),
        _summary_section(analysis, record, run),
        _config_section(config),
        _seed_table(analysis, record["orthographic"], record["cer"]),
        _budgets_section(budgets),
        _other_sets_section(record["other_eval_sets"]),
        render_error_analysis(record["error_analysis"]),
        f"## Plots\n\n![per-seed delta with 95% CIs]({SEED_PLOT})\n\n![bootstrap distribution of the mean delta]({BOOTSTRAP_PLOT})",
        _samples_section(analysis, table),
        _artifacts_section(analysis, run),
        _reading_guide(analysis),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def _verdict_section(analysis: Analysis, record: dict[str, Any], budgets: list[BudgetResult]) -> str:
    determinism = record["determinism"]
    lines = [
        "## Verdict",
        "",
        f"**{record['sentence']}**",
        "",
        f"- Verdict: `{analysis.verdict}`",
        f"- Underpowered: {'yes' if analysis.power.underpowered else 'no'}"
        + (f" ({'; '.join(analysis.power.reasons)})" if analysis.power.reasons else ""),
    ]
    if analysis.power.needed:
        lines.append(f"- {analysis.power.needed}")
    lines.append(f"- Confirmed on: {_selection_line(record)}")
    for budget in budgets:
        lines.append(f"- Budget on `{budget.eval_set}`: `{budget.decision}`. {budget_explanation(budget)}")
    lines.append(f"- Recommended: {record['recommendation']}")
    lines.append(f"- Deterministic: {determinism.get('deterministic', 'unknown')} — {determinism.get('detail', 'not checked')}")
    lines += [f"- Warning: {line}" for line in record.get("warnings", [])]
    return "\n".join(lines)


def _selection_line(record: dict[str, Any]) -> str:
    confirmed, selected = record.get("confirmed_on") or {}, record.get("selected_on") or {}
    tested = f"`{record['eval_set']}`" + (f" ({confirmed['path']})" if confirmed.get("path") else "")
    if record["selection_bias"] is None:
        return f"{tested}; which set chose this recipe is not known (not a sweep's best.json), so selection bias is not assessed"
    if record["selection_bias"]:
        return (f"{tested}, the set the sweep selected on (`{selected.get('name')}`): the gain there is biased upward, "
                "since the recipe won as the best of many noisy scores on it")
    return f"{tested}; the sweep selected on `{selected.get('name')}`, so this set is untouched by the selection"


def _recommendation(analysis: Analysis, budgets: list[BudgetResult], record: dict[str, Any], unbudgeted_worse: Sequence[str]) -> str:
    """yes only for a stable gain on enough seeds with every budget shown within; the reasons otherwise."""
    if record["recommended"]:
        imprecise = " (its size is less certain than the minimum effect: see Underpowered)" if analysis.power.underpowered else ""
        return f"yes (a stable gain{imprecise}, {'and every budget within' if budgets else 'no eval set has a budget'})"
    reasons = [] if analysis.verdict == "stable gain" else [f"the verdict is `{analysis.verdict}`"]
    if len(analysis.seeds) < MIN_SEEDS:
        reasons.append(f"{counted(len(analysis.seeds), 'seed')}: a recommendation needs at least {MIN_SEEDS} (--trials {MIN_SEEDS})")
    if analysis.units < MIN_UNITS:
        reasons.append(f"{counted(analysis.units, f'held-out {analysis.unit}')}: a recommendation needs at least {MIN_UNITS}")
    reasons += [f"`{b.eval_set}` is {b.decision}" for b in budgets if b.decision != "within budget"]
    reasons += [f"`{name}` got worse on most seeds and has no budget to say whether that is acceptable "
                f"(--max-wer-increase {name}=INCREASE)" for name in unbudgeted_worse]
    if record["selection_bias"]:
        reasons.append(f"`{analysis.eval_set}` is the set the sweep selected it on: confirm on an untouched set "
                       "(best.json's confirm_on, or --confirm-on NAME=PATH)")
    return "no (" + "; ".join(reasons) + ")"


def budget_explanation(budget: BudgetResult) -> str:
    """What the decision rests on, the seeds that alone rose past the limit, and what would
    settle an inconclusive budget."""
    b = budget
    (lower, upper), limit = budget_bounds(b)
    text = (f"Mean rise {points(b.rise_mean, True)} WER points, one-sided 95% bounds [{lower}, "
            f"{upper}] against a limit of {limit}, over {counted(len(b.seed_rises), 'seed')} and "
            f"{counted(b.units, b.unit)}.")
    if b.dropped_empty:
        text += f" {counted(b.dropped_empty, 'utterance')} with an empty normalised reference {'are' if b.dropped_empty != 1 else 'is'} not scored."
    if b.seeds_over:
        (worst,), _ = beside([max(b.seed_rises)], b.limit, sign=True, tolerance=WER_SLACK)
        text += (f" {b.seeds_over} of {counted(len(b.seed_rises), 'seed')} alone rose past the limit (worst {worst}); "
                 "the decision weighs every seed and the utterance sampling.")
    return text + (f" {b.needed}" if b.needed else "")


def _unbudgeted_worse(other: dict[str, Any], budgeted: set[str]) -> list[str]:
    """Unbudgeted secondary sets (a source-domain canary) where most seeds got worse: a gain on
    the target domain that costs the source domain is what a user must hear before shipping the
    adapter. A budgeted set's decision already says how far it rose."""
    return [name for name, wers in other.items()
            if name not in budgeted and 2 * sum(c > 0 for c in _wer_changes(wers)) > len(_wer_changes(wers))]


def _other_set_regressions(other: dict[str, Any], budgeted: set[str]) -> list[str]:
    """The warning for each set ``_unbudgeted_worse`` names."""
    lines = []
    for name in _unbudgeted_worse(other, budgeted):
        changes = _wer_changes(other[name])
        lines.append(f"`{name}` is worse with the adapter on {sum(c > 0 for c in changes)} of {counted(len(changes), 'seed')} "
                     f"(mean {points(sum(changes) / len(changes), True)} WER points; no budget set for it)")
    return lines


def _wer_changes(wers: dict[str, list[float]]) -> list[float]:
    """Tuned minus baseline WER, per seed, from an ``other_eval_sets`` entry."""
    return [tuned - baseline for baseline, tuned in zip(wers["baseline_wer"], wers["tuned_wer"])]


def _summary_section(analysis: Analysis, record: dict[str, Any], run: dict[str, Any]) -> str:
    unit_note = (
        f"{analysis.units} speakers resampled as blocks" if analysis.unit == "speaker" else f"{counted(analysis.units, 'utterance')} resampled"
    )
    relative = f" ({100 * analysis.min_effect_relative:.0f}% of the baseline WER)" if analysis.min_effect_relative is not None else ""
    lines = ["## Run summary", ""]
    for key, label in (("date", "Date"), ("command", "Command"), ("source", "Config from"), ("model", "Model"), ("device", "Device")):
        if run.get(key):
            value = f"`{run[key]}`" if key in ("command", "source", "model") else run[key]
            lines.append(f"- {label}: {value}")
    lines += [
        f"- Seeds: {', '.join(str(s.seed) for s in analysis.seeds)}",
        f"- Primary eval set: `{analysis.eval_set}`: {counted(analysis.utterances, 'utterance')}, {counted(analysis.ref_words, 'reference word')} "
        f"({unit_note}); {analysis.dropped_empty} dropped for an empty normalised reference",
        f"- Bootstrap: {analysis.resamples} resamples, bootstrap seed {analysis.bootstrap_seed}; "
        f"minimum effect of interest {beside([analysis.min_effect], 0.0)[0][0]} WER points{relative}",
    ]
    if run.get("wall_seconds") is not None:
        lines.append(_wall_time_line(run))
    for failure in run.get("failed", []):
        lines.append(f"- FAILED: seed {failure['seed']} ({failure['kind']}): {failure['error']}")
    return "\n".join(lines)


def _wall_time_line(run: dict[str, Any]) -> str:
    """The wall time counts the seed runs trained by this command; reused ones are named apart."""
    reused = reused_seed_runs(run)
    trained = len(run.get("seed_runs", [])) - len(reused)
    line = f"- Wall time: {run['wall_seconds']:.1f} s for the {counted(trained, 'seed run')} trained now"
    if reused:
        names = ", ".join(f"seed {r['seed']}{' rerun' if r['rerun'] else ''}" for r in reused)
        line += f"; reused from earlier runs of the same recipe, not counted: {names}"
    return line


def reused_seed_runs(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed runs read back from an earlier run's folder (run.json's ``reused``), in seed order."""
    reused = [{"seed": r["seed"], "rerun": bool(r.get("rerun"))} for r in run.get("seed_runs", []) if r.get("reused")]
    return sorted(reused, key=lambda r: (r["seed"], r["rerun"]))


def _config_section(config: dict[str, Any] | None) -> str:
    if not config:
        return "## Configuration\n\nNo config.json beside the scores table; statistics only."
    lines = ["## Configuration", "", "| field | value |", "|---|---|"]
    for key, value in config.items():
        shown = {"seed": "varies: one run per seed (table below)", "output_dir": "one folder per seed: `seed_<seed>/` beside this report"}.get(key) or json.dumps(value)
        lines.append(f"| `{key}` | {shown.replace('|', '/')} |")
    return "\n".join(lines)


def _seed_table(analysis: Analysis, orthographic: dict[str, Any] | None, cer: dict[str, Any] | None) -> str:
    """One row per seed and the pooled row; CER and the orthographic WER (lower-case only) sit
    beside the normalised WER, so near misses and a formatting-only gain are visible."""
    ortho, chars = _by_seed(orthographic, "wer"), _by_seed(cer, "cer")
    lines = [
        f"## Per-seed results ({analysis.eval_set})",
        "",
        "| seed | baseline WER | tuned WER | delta (points) | 95% CI (points) | POI | errors removed / added (net, by utterance) | utterances better / worse | "
        "CER baseline -> tuned | orthographic WER baseline -> tuned |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in analysis.seeds:
        (delta, low, high), _ = beside([s.delta, *s.ci], 0.0, sign=True)
        (tuned,), baseline = beside([s.tuned_wer], s.baseline_wer)
        lines.append(
            f"| {s.seed} | {baseline}% | {tuned}% | {delta} | "
            f"[{low}, {high}] | {probability(s.poi, MIN_POI, 3)} | {s.errors_removed} / {s.errors_added} | "
            f"{s.utterances_better} / {s.utterances_worse} | {chars.get(s.seed, 'n/a')} | {ortho.get(s.seed, 'n/a')} |"
        )
    (mean, low, high), _ = beside([analysis.mean_delta, *analysis.ci], 0.0, sign=True)
    (tuned,), baseline = beside([analysis.tuned_wer_mean], analysis.baseline_wer)
    spread = len(analysis.seeds) > 1  # one seed has no spread to report
    lines.append(
        f"| **mean** | {baseline}% | {tuned}%{f' ± {points(analysis.tuned_wer_sd)}' if spread else ''} | "
        f"**{mean}**{f' (sd {points(analysis.sd_delta)})' if spread else ''} | "
        f"[{low}, {high}] | {probability(analysis.poi, MIN_POI, 3)} | | | | |"
    )
    return "\n".join(lines)


def _by_seed(rates: dict[str, Any] | None, score: str) -> dict[int, str]:
    """``{seed: "12.00% -> 9.50%"}`` from a per-seed rates record; {} where the table had none."""
    if not rates:
        return {}
    return {seed: f"{percent(b)} -> {percent(t)}" for seed, b, t in zip(rates["seeds"], rates[f"baseline_{score}"], rates[f"tuned_{score}"])}


def _budgets_section(budgets: list[BudgetResult]) -> str:
    """Each budgeted eval set's non-inferiority decision and the numbers behind it."""
    if not budgets:
        return ""
    lines = ["## Budgets on other eval sets (non-inferiority)", "",
             "| eval set | limit (points) | mean rise (points) | one-sided 95% bounds | seeds over the limit alone | decision |",
             "|---|---:|---:|---:|---:|---|"]
    for b in budgets:
        (lower, upper), limit = budget_bounds(b)
        lines.append(f"| {b.eval_set} | {limit} | {points(b.rise_mean, True)} | "
                     f"[{lower}, {upper}] | {b.seeds_over} of {len(b.seed_rises)} | {b.decision} |")
    lines.append("")
    lines += [f"- `{b.eval_set}`: {budget_explanation(b)}" for b in budgets]
    return "\n".join(lines)


def _other_sets_section(other: dict[str, Any]) -> str:
    if not other:
        return ""
    lines = ["## Other eval sets (WER per seed)", ""]
    for name, wers in other.items():
        changes = _wer_changes(wers)
        if not changes:
            lines.append(f"- `{name}`: not scored: every utterance's normalised reference is empty "
                         f"({counted(wers['dropped_empty_references'], 'utterance')} dropped)")
            continue
        worse = sum(c > 0 for c in changes)
        dropped = wers.get("dropped_empty_references", 0)
        lines.append(f"- `{name}`: tuned worse than baseline on {worse} of {counted(len(changes), 'seed')} "
                     f"(mean change {points(sum(changes) / len(changes), True)} WER points)"
                     + (f"; {counted(dropped, 'utterance')} with an empty normalised reference dropped" if dropped else ""))
    lines += ["", "| eval set | seed | baseline WER | tuned WER |", "|---|---:|---:|---:|"]
    for name, wers in other.items():
        for seed, base, tuned in zip(wers["seeds"], wers["baseline_wer"], wers["tuned_wer"]):
            lines.append(f"| {name} | {seed} | {percent(base)} | {percent(tuned)} |")
    return "\n".join(lines)


def _samples_section(analysis: Analysis, table: Any) -> str:
    seed = analysis.seeds[0].seed
    samples = changed_predictions(table, analysis.eval_set, seed)
    lines = [f"## Sample predictions that changed ({analysis.eval_set}, seed {seed})", ""]
    if not samples:
        return "\n".join(lines + ["No hypothesis changed between baseline and tuned."])
    for s in samples:
        speaker = f", speaker `{s['speaker']}`" if s["speaker"] else ""
        lines += [
            f"- utterance `{s['utterance_id']}`{speaker}: errors {s['baseline_errors']} -> {s['tuned_errors']}",
            f"  - reference: \"{s['reference']}\"",
            f"  - baseline: \"{s['baseline']}\"",
            f"  - tuned: \"{s['tuned']}\"",
        ]
    return "\n".join(lines)


def _artifacts_section(analysis: Analysis, run: dict[str, Any]) -> str:
    lines = ["## Artifacts", "", "- `scores.parquet`: one row per (seed, system, eval set, utterance)", "- `verdict.json`, `report.md`, "
             f"`{SEED_PLOT}`, `{BOOTSTRAP_PLOT}`",
             "- `trn/`: NIST trn transcripts (Whisper-normalised, `(speaker-utterance)` ids) of every eval set, seed and system, "
             f"for sclite and sc_stats; e.g. `{sclite_hint(analysis.eval_set, analysis.seeds[0].seed)}`"]
    for seed_run in sorted(run.get("seed_runs", []), key=lambda r: (r["seed"], bool(r.get("rerun")))):
        took = f", {seed_run['elapsed_seconds']:.0f} s" if seed_run.get("elapsed_seconds") is not None else ""
        node = f" on {seed_run['node']}" if seed_run.get("node") else ""
        earlier = " (reused from an earlier run)" if seed_run.get("reused") else ""
        lines.append(f"- seed {seed_run['seed']}{' (rerun)' if seed_run.get('rerun') else ''}: `{seed_run['output_dir']}`{node}{took}{earlier}")
    return "\n".join(lines)


def _reading_guide(analysis: Analysis) -> str:
    unit = "speakers (as blocks)" if analysis.unit == "speaker" else "utterances"
    return (
        "## How to read this\n\n"
        "Delta = baseline WER - tuned WER after Whisper's English normaliser (+ = tuned is better). Each seed's CI comes "
        f"from a paired bootstrap over held-out {unit}, the same resample for baseline and tuned; the pooled CI also "
        "resamples seeds. POI is the share of resamples with delta > 0. Verdicts, the first rule that holds: regression "
        "(CI < 0); stable gain (CI > 0, POI >= 0.95 and every seed improves); unstable (seeds significantly disagree, or "
        "the CI excludes 0 while a seed goes the other way); else no significant change. A budget on another eval set is "
        "a one-sided non-inferiority test of its rise (tuned - baseline WER) with the same bootstrap: within budget when "
        "the upper 95% bound is at most the limit, over budget when the lower 95% bound exceeds it, else inconclusive. "
        f"Recommended = a stable gain on at least {MIN_SEEDS} seeds and {MIN_UNITS} held-out units, every budget within, no eval set "
        "without a budget worse on most seeds, on a set the sweep did not select on: a gain measured on "
        "the set the sweep selected on is biased upward (winner's curse); an untouched set confirms it. Same seed twice only shows determinism, reported separately. "
        "Per seed, errors removed / added sum each utterance's net change in word errors; the error analysis's words fixed "
        "and broken compare the two alignments word by word, so the two count differently. A speaker's or a budget's "
        "change is tuned - baseline (- = tuned is better), the opposite sign of delta."
    )


# --------------------------------------------------------------------------- writing it all


def write_outputs(
    output_dir: Path, analysis: Analysis, table: Any, determinism: dict[str, Any], run: dict[str, Any],
    config: dict[str, Any] | None, budgets: list[BudgetResult], selection: dict[str, Any],
) -> dict[str, Any]:
    """verdict.json, report.md, the plots and the trn files, each atomically; returns the verdict record."""
    output_dir.mkdir(parents=True, exist_ok=True)
    record = verdict_record(analysis, table, determinism, budgets, selection)
    record["max_wer_increase"] = {b.eval_set: b.limit for b in budgets}
    record["warnings"] = _other_set_regressions(record["other_eval_sets"], set(record["budgets"]))
    record["reused_seed_runs"] = reused_seed_runs(run)
    atomic_write_json(output_dir / "verdict.json", record)
    plot_seed_deltas(analysis, output_dir / SEED_PLOT)
    plot_mean_distribution(analysis, output_dir / BOOTSTRAP_PLOT)
    write_trn_files(output_dir, table)
    atomic_write_text(output_dir / "report.md", render_report(analysis, record, table, run, config, budgets))
    return record
