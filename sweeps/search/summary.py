"""What a person reads about a sweep: ``summary.md`` and the lines the command prints at the end.

Rendered from the results tables and the chosen winner (``sweeps.search.results``), never
from live trials, so ``--analyze`` writes the same text.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from sweeps.budget import within_budget
from sweeps.search import analysis
from sweeps.search.config import SweepConfig, results_column
from sweeps.search.experiment import STUDY_DB, TrialConcurrency
from sweeps.search.racing import NOT_RACED, RACE_COMPLETE, RACE_UNFINISHED, unfinished_race_runs
from sweeps.search.trial import COMPLETED, ERROR, STOPPED_EARLY
from sweeps.wording import counted
from trainable.config import target_module_set_name
from trainable.metrics import PRIMARY_BASELINE, eval_set_names, metric_name, metric_value

LEAST_VIOLATING_SHOWN = 5


def budget_text(sweep: SweepConfig) -> str:
    return ", ".join(f"{name} within +{100 * limit:g} points of its baseline" for name, limit in sweep.max_wer_increase)


def resume_command(sweep: SweepConfig) -> str:
    return f"python -m sweeps.run --resume --name {sweep.name}"


def unfinished_trials(trials: Any, sweep: SweepConfig) -> int:
    """Search trials not run to an end: started but not ended (``unended_trials``), and
    those of ``num_samples`` not started at all (an interrupted search)."""
    return unended_trials(trials) + max(0, sweep.num_samples - len(trials))


def unended_trials(trials: Any) -> int:
    """Trials started but neither completed, stopped nor errored."""
    return len(trials) - sum(_count(trials, status) for status in (COMPLETED, STOPPED_EARLY, ERROR))


def trial_counts(trials: Any, sweep: SweepConfig) -> str:
    """The search's trials by how they ended, as the console and summary.md both say it. The
    unfinished ones include those of ``num_samples`` not started, so the parts add up."""
    ended = ", ".join(f"{_count(trials, status)} {STATUS_WORDS[status]}" for status in (COMPLETED, STOPPED_EARLY, ERROR))
    unfinished = unfinished_trials(trials, sweep)
    total = sum(_count(trials, status) for status in STATUS_WORDS) + unfinished
    return f"{counted(total, 'trial')}: {ended}" + (f", {unfinished} unfinished" if unfinished else "")


def race_unfinished_note(sweep: SweepConfig, runs: int) -> str:
    seeds = sweep.racing.seeds + 1
    return (f"The race of finalists is unfinished ({counted(runs, 'race run')} not finished): no winner is "
            f"chosen until every finalist has its {seeds} seeds. Continue it with: {resume_command(sweep)}")


def not_raced_note(race: list[dict] | None) -> str | None:
    """For finalists chosen under other budgets than the race's: they were not raced, so the
    winner is chosen among the raced finalists only; None when every finalist was raced."""
    unraced = [entry["trial_id"] for entry in race or () if entry.get("race_status") == NOT_RACED]
    if not unraced:
        return None
    raced = sum(entry.get("race_status") == RACE_COMPLETE for entry in race)
    return (f"Finalist{'s' if len(unraced) != 1 else ''} {', '.join(unraced)} under these budgets "
            f"{'were' if len(unraced) != 1 else 'was'} not raced (the race ran the finalists of the sweep's own budgets), "
            f"so {'they have' if len(unraced) != 1 else 'it has'} the search's single seed only and cannot win: the winner is "
            f"chosen among the {counted(raced, 'raced finalist')}. Racing {'them' if len(unraced) != 1 else 'it'} "
            "needs a new sweep with these budgets (--resume keeps the sweep's own)")


def unfinished_note(trials: Any, sweep: SweepConfig, race: list[dict] | None) -> str | None:
    """A sentence, with the command that finishes it, for an interrupted sweep; None when finished."""
    search = unfinished_trials(trials, sweep)
    if search:
        then = ", then races the finalists" if sweep.racing.enabled else ""
        return (f"The sweep is unfinished: {search} of its {max(len(trials), sweep.num_samples)} search trials "
                f"{'has' if search == 1 else 'have'} not finished, so any best trial below is only the best so far. "
                f"Continue it with: {resume_command(sweep)} "
                f"(it keeps the finished trials{then})")
    runs = unfinished_race_runs(race, sweep) if race else 0
    return race_unfinished_note(sweep, runs) if runs else None


def summary_markdown(
    trials: Any, best: dict | None, sweep: SweepConfig, experiment_path: str, wall_seconds: float | None,
    race: list[dict] | None = None, results_dir: Path | None = None, race_trials: Any = None,
    concurrency: TrialConcurrency | None = None,
) -> str:
    """Counts, the winner beside the baseline, the race, the trade-off, parameter importance,
    a leaderboard and errors. ``results_dir`` is where the trade-off plot and the Optuna
    study are (without it those sections are left out); ``concurrency``: how many trials
    could run at once (without it: ``max_concurrent_trials``, said to be unchecked)."""
    out = io.StringIO()
    out.write(f"# Sweep `{sweep.name}`\n\n{trial_counts(trials, sweep)}.\n\n")
    unfinished = unfinished_note(trials, sweep, race)
    if unfinished:
        out.write(f"**{unfinished}.** `best.json` says `\"complete\": false`, and repro refuses it until the sweep is finished.\n\n")
    out.write(f"Metric: `{sweep.metric}` ({sweep.mode}), tuned WER on `{sweep.trial.primary_eval}`. Experiment: `{experiment_path}`\n\n")
    _write_roles(out, sweep)
    _write_timing(out, trials, wall_seconds, concurrency or TrialConcurrency(sweep.max_concurrent_trials), race_trials,
                  finished=unfinished is None)
    _write_best(out, best, trials, sweep, race)
    _write_race(out, race, best, sweep)
    if results_dir is not None:
        study = analysis.load_study(Path(results_dir) / STUDY_DB, sweep)  # read once, for both sections
        _write_tradeoff(out, trials, best, sweep, results_dir, study)
        _write_importance(out, sweep, study)
    _write_leaderboard(out, trials, sweep)
    _write_errors(out, trials)
    return out.getvalue()


def describe_best(results: Any, sweep: SweepConfig) -> str:
    """What the command line prints at the end: the winner, how it was chosen, its WERs."""
    trials, best = results.trials, results.best
    head = f"Sweep {sweep.name}, {trial_counts(trials, sweep)}."
    race = getattr(results, "race", None)
    unfinished = unfinished_note(trials, sweep, race)
    if unfinished:
        head += "\n" + unfinished + "."
    if best is None:
        if unfinished and race:
            return "\n".join([head, *_race_progress_lines(race, sweep)])
        return head + "\n" + no_best_reason(trials, sweep, race) + "; see summary.md."
    searched = ", ".join(f"{name}={value}" for name, value in searched_values(best, sweep).items())
    no_gain = no_gain_note(best, sweep)
    title = "Best so far" if unfinished else "Least bad" if no_gain else "Best"
    lines = [head, *([no_gain] if no_gain else []), f"{title}: trial {best['trial_id']}: {searched}" if unfinished
             else f"{title} trial {best['trial_id']}: {searched}"]
    if best.get("chosen_by") == "racing":
        raced = sum(f.get("race_status", RACE_COMPLETE) == RACE_COMPLETE for f in best["race"]["finalists"])
        lines[-1] += (f" (the best mean over {len(best['selection_seeds'])} seeds among {counted(raced, 'raced finalist')}"
                      + (f" with {budget_text(sweep)})" if sweep.max_wer_increase else ")"))
        lines += _race_lines(best)
        unraced = not_raced_note(race)
        if unraced:
            lines.append(unraced + ".")
    elif sweep.max_wer_increase:
        within = _count_within_budget(trials, sweep)
        lines[-1] += f" (best of {counted(within, 'completed trial')} with {budget_text(sweep)})"
    for name, scores in best["eval_sets"].items():
        lines.append(f"  {name:>10} WER: tuned {_pct(scores.get('tuned_wer'))} vs baseline {_pct(scores.get('baseline_wer'))}"
                     + (" (the search trial's seed)" if best.get("chosen_by") == "racing" else ""))
    if best.get("confirm_on") and not no_gain and not unfinished:
        lines.append(f"Confirm it on {best['confirm_on']['name']}, which no trial scored: python -m sweeps.repro --sweep {sweep.name} --trials 5")
    return "\n".join(lines)


def no_gain_note(best: dict[str, Any], sweep: SweepConfig) -> str | None:
    """A sentence when the winner's select-set WER (its mean over seeds when raced) is no
    better than the base model's; None when it beats it."""
    base = best["eval_sets"].get(sweep.select_on, {}).get("baseline_wer")
    raced = best.get("chosen_by") == "racing"
    tuned = next(f["mean_wer"] for f in best["race"]["finalists"] if f["trial_id"] == best["trial_id"]) if raced else best.get("tuned_wer")
    if base is None or tuned is None or tuned < base:
        return None
    return (f"No recipe beat the base model on {sweep.select_on}: the least bad {'mean ' if raced else ''}WER is "
            f"{_pct(tuned)} against the base model's {_pct(base)}. Keep the base model, or search other learning "
            "rates, target modules or training lengths.")


def searched_values(best: dict[str, Any], sweep: SweepConfig) -> dict[str, str]:
    """The winner's searched fields for display, target modules by set name ("qkvo")."""
    values = {}
    for name in sweep.searched_names:
        value = best["config"][name]
        values[name] = target_module_set_name(tuple(value)) if name == "target_modules" else _format(value)
    return values


def no_best_reason(trials: Any, sweep: SweepConfig, race: list[dict] | None = None) -> str:
    completed = _count(trials, COMPLETED)
    if race and any(entry.get("race_status") == RACE_UNFINISHED for entry in race):
        return race_unfinished_note(sweep, unfinished_race_runs(race, sweep))
    if race:
        unraced = f". {not_raced_note(race)}" if not_raced_note(race) else ""
        complete = sum(entry.get("race_status", RACE_COMPLETE) == RACE_COMPLETE for entry in race)
        if not complete:
            return (f"No finalist completed its race runs ({counted(len(race), 'finalist')}; see the race table), "
                    f"so there is no best config{unraced}")
        return (f"No finalist that completed its race runs ({complete} of {len(race)}; see the race table) kept {budget_text(sweep)} "
                f"on the mean over its seeds, though every finalist kept it on the search trial's own seed, so there is no best config{unraced}")
    if completed and sweep.max_wer_increase:
        return f"No completed trial kept {budget_text(sweep)} ({completed} completed), so there is no best config"
    return "No trial completed, so there is no best config"


def _race_progress_lines(race: list[dict], sweep: SweepConfig) -> list[str]:
    """Each finalist's seeds so far, for a race that has not finished."""
    lines = []
    for entry in race:
        done = entry["race_status"] == RACE_COMPLETE
        lines.append(f"  finalist {entry['trial_id']}: {len(entry['seeds'])} of {sweep.racing.seeds + 1} seeds "
                     f"({', '.join(map(str, entry['seeds']))}){'' if done else ', ' + entry['race_status']}; "
                     f"mean {sweep.select_on} WER so far {_pct(entry['mean_wer'])}")
    return lines


def _race_lines(best: dict[str, Any]) -> list[str]:
    winner = next(f for f in best["race"]["finalists"] if f["trial_id"] == best["trial_id"])
    seeds = ", ".join(map(str, winner["seeds"]))
    lines = [f"  mean {best['select_on']} WER {_pct(winner['mean_wer'])} ± {_points(winner['sd_wer'])} points over seeds {seeds}"]
    for name, mean in winner["mean_wer_increases"].items():
        per_seed = ", ".join(_points(v, sign=True) for v in winner["wer_increases"][name])
        lines.append(f"  mean {name} WER increase {_points(mean, sign=True)} points (per seed {per_seed})")
    return lines


def _count(trials: Any, status: str) -> int:
    return int((trials["status"] == status).sum()) if len(trials) else 0


def _count_within_budget(trials: Any, sweep: SweepConfig) -> int:
    return int(((trials["status"] == COMPLETED) & within_budget(trials, sweep.max_wer_increase)).sum())


def _write_roles(out: io.StringIO, sweep: SweepConfig) -> None:
    if sweep.confirm_on:
        name, path = sweep.confirm_on[0]
        out.write(f"Selected on `{sweep.select_on}`; `{name}` (`{path}`) is kept for repro's confirmation: no trial scored it.\n\n")
    else:
        out.write(f"Selected on `{sweep.select_on}`. No `confirm_on` set is named, so repro can only confirm on the "
                  "set the winner was chosen on, and its gain there is biased upward.\n\n")


def _write_timing(out: io.StringIO, trials: Any, wall_seconds: float | None, concurrency: TrialConcurrency, race_trials: Any = None,
                  finished: bool = True) -> None:
    """Trial time summed over the search's trials and the race's (``race_trials``): the sweep's
    wall time spans both, so the overhead ratio must count both. The ideal wall time divides
    it by the trials that could run at once, which the line names. No trial time when no
    trial reported one (it is unknown, not 0 s), and no overhead ratio for an unfinished
    sweep: its unfinished trials' time since their last report is in the wall time only."""
    if not len(trials) or trials["wall_seconds"].isna().all():
        if wall_seconds:
            out.write(f"Sweep wall time {wall_seconds:.0f} s; no trial reported its own time.\n\n")
        return
    search_seconds = float(trials["wall_seconds"].fillna(0).sum())
    race_seconds = float(race_trials["wall_seconds"].fillna(0).sum()) if race_trials is not None and len(race_trials) else 0.0
    trial_seconds = search_seconds + race_seconds
    out.write(f"Trial time: {trial_seconds:.0f} s summed over trials"
              + (f" ({search_seconds:.0f} s search, {race_seconds:.0f} s race)" if race_trials is not None else ""))
    if wall_seconds:
        ideal = trial_seconds / concurrency.trials if finished else 0
        out.write(f"; sweep wall time {wall_seconds:.0f} s" + (" (search and race)" if race_trials is not None else ""))
        out.write(f"; overhead ratio {wall_seconds / ideal:.2f}, wall time over trial time / {counted(concurrency.trials, 'trial')} "
                  f"at once ({concurrency.describe()})" if ideal else "")
    out.write(".\n\n")


def _write_best(out: io.StringIO, best: dict | None, trials: Any, sweep: SweepConfig, race: list[dict] | None) -> None:
    if best is None:
        if race and any(entry.get("race_status") == RACE_UNFINISHED for entry in race):
            out.write("**No winner is chosen while the race is unfinished** (the finalists' seeds so far are in the table below).\n\n")
        else:
            out.write(f"**{no_best_reason(trials, sweep, race)}.**\n\n")
        return
    no_gain = no_gain_note(best, sweep)
    title = "Best so far" if best.get("complete") is False else "Least bad" if no_gain else "Best"
    out.write(f"## {title}: trial `{best['trial_id']}`\n\n" + (f"**{no_gain}**\n\n" if no_gain else ""))
    if best.get("chosen_by") == "racing":
        out.write(f"Chosen by racing: the finalist with the best mean `{sweep.select_on}` WER over its "
                  f"{len(best['selection_seeds'])} seeds whose mean WER increases keep the budgets (table below).\n\n")
    elif sweep.max_wer_increase:
        completed = _count(trials, COMPLETED)
        out.write(f"Chosen among the {_count_within_budget(trials, sweep)} of {completed} completed trials "
                  f"with {budget_text(sweep)} (`max_wer_increase`).\n\n")
    for name, value in searched_values(best, sweep).items():
        out.write(f"- `{name}` = `{value}`\n")
    seed_note = " (the search trial's own seed)" if best.get("chosen_by") == "racing" else ""
    out.write(f"\n| eval set{seed_note} | baseline WER | tuned WER | baseline orth. | tuned orth. |\n|---|---|---|---|---|\n")
    for name, s in best["eval_sets"].items():
        out.write(f"| {name} | {_pct(s.get('baseline_wer'))} | {_pct(s.get('tuned_wer'))} | "
                  f"{_pct(s.get('baseline_orthographic_wer'))} | {_pct(s.get('tuned_orthographic_wer'))} |\n")
    out.write("\n`best.json` holds the whole recipe: `python -m trainable.run --config results/"
              f"{sweep.name}/best.json` trains it again.\n\n")


def _write_race(out: io.StringIO, race: list[dict] | None, best: dict | None, sweep: SweepConfig) -> None:
    if not race:
        return
    budgets = [name for name, _ in sweep.max_wer_increase]
    seeds = sweep.racing.seeds + 1
    each = "each " if len(race) != 1 else ""
    out.write(f"## Finalists raced across seeds\n\nThe {counted(len(race), 'best fully trained recipe')} within the budgets, "
              f"{each}to be retrained with {counted(sweep.racing.seeds, 'new seed')}; mean ± sd over the seeds "
              f"{each or 'it '}has. Only a finalist with {seeds} seeds ({RACE_COMPLETE}) can win.\n\n")
    columns = ["trial", *[results_column(n) for n in sweep.searched_names], "seeds", "race",
               f"{sweep.select_on} WER (mean ± sd)", *[f"{name} WER increase, points (mean ± sd)" for name in budgets], "keeps budgets", "chosen"]
    out.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for entry in race:
        recipe = entry["recipe"]
        status = entry.get("race_status", RACE_COMPLETE)
        cells = [f"`{entry['trial_id']}`", *[_format(recipe.get(results_column(n))) for n in sweep.searched_names],
                 ", ".join(map(str, entry["seeds"])), status if status == RACE_COMPLETE else f"**{status}** ({len(entry['seeds'])} of {seeds} seeds)",
                 f"{_pct(entry['mean_wer'])} ± {_points(entry['sd_wer'])}"]
        for name in budgets:
            cells.append(f"{_points(entry['mean_wer_increases'][name], sign=True)} ± {_points(entry['sd_wer_increases'][name])}")
        cells += ["yes" if entry["keeps_budgets"] else "no", "**yes**" if best and best["trial_id"] == entry["trial_id"] else ""]
        out.write("| " + " | ".join(cells) + " |\n")
    out.write("\n")
    unraced = not_raced_note(race)
    if unraced:
        out.write(f"**{unraced}.**\n\n")


def _write_tradeoff(out: io.StringIO, trials: Any, best: dict | None, sweep: SweepConfig, results_dir: Path, study: Any) -> None:
    """The trade-off plot and Pareto front; with no feasible trial, the least-violating
    trials and which parameter to move (from the Optuna ``study``, None when missing)."""
    points = analysis.tradeoff_points(trials, sweep, COMPLETED)
    sets = analysis.tradeoff_sets(sweep)
    if not sets or not len(points):
        return
    winner = best["trial_id"] if best else None
    if analysis.plot_tradeoff(points, sweep, Path(results_dir) / analysis.TRADEOFF_PLOT, winner):
        out.write(f"## Trade-off: `{sweep.select_on}` WER against WER increases\n\n![trade-off]({analysis.TRADEOFF_PLOT})\n\n")
    feasible = points["feasible"]
    if sweep.objectives or not feasible.any():
        out.write("Pareto front (no other fully trained trial is better on every column):\n\n")
        _write_points(out, points[points["pareto"]], sweep, sets)
    if sweep.max_wer_increase and not feasible.any():
        out.write(f"**No fully trained trial keeps {budget_text(sweep)}.** The least-violating ones:\n\n")
        _write_points(out, points.sort_values("violation", kind="stable").head(LEAST_VIOLATING_SHOWN), sweep, sets)
        _write_separation(out, points, sweep, study)


def _write_separation(out: io.StringIO, points: Any, sweep: SweepConfig, study: Any) -> None:
    importances = analysis.parameter_importances(study, sweep, target="violation")
    if not importances:
        out.write("Too few trials to say which searched parameter decides the violation.\n\n")
        return
    parameter = next(iter(importances))
    out.write(f"The searched parameter that most decides the budget violation is `{parameter}` (Optuna PED-ANOVA importance "
              f"{importances[parameter]:.2f}); moving toward {analysis.move_hint(points, parameter)} lowered it in these trials. "
              "Narrow the search space that way, or relax the budget.\n\n")


def _write_importance(out: io.StringIO, sweep: SweepConfig, study: Any) -> None:
    importances = analysis.parameter_importances(study, sweep, target="wer")
    if not importances:
        return
    out.write(f"## Parameter importance for a low `{sweep.select_on}` WER\n\nOptuna's PED-ANOVA evaluator on the stored study "
              f"(`{STUDY_DB}`), fully trained trials only; with few trials, a rough guide.\n\n| parameter | importance |\n|---|---|\n")
    for name, value in importances.items():
        out.write(f"| `{name}` | {value:.2f} |\n")
    out.write("\n")


def _write_points(out: io.StringIO, points: Any, sweep: SweepConfig, sets: list[str]) -> None:
    columns = ["trial_id", *sweep.searched_names, sweep.metric, *[f"{name}_increase" for name in sets], "violation"]
    out.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for _, row in points.iterrows():
        cells = []
        for column in columns:
            value = row[column]
            cells.append(_pct(value) if column == sweep.metric else _points(value, sign=True) if column.endswith("_increase")
                         else _points(value) if column == "violation" else _format(value))
        out.write("| " + " | ".join(cells) + " |\n")
    out.write("\n")


def _write_leaderboard(out: io.StringIO, trials: Any, sweep: SweepConfig) -> None:
    if not len(trials):
        return
    # Beside the optimised WER, every other eval set's tuned WER (e.g. a canary): the best
    # held-out trial may be the one that forgets most, and the reader should see it here.
    others = [name for name in eval_set_names(trials.columns) if name != sweep.trial.primary_eval]
    columns = ["trial_number", "trial_id", "status", *[results_column(n) for n in sweep.searched_names],
               sweep.metric, f"best_{sweep.metric}", PRIMARY_BASELINE, *[metric_name(name, "tuned") for name in others],
               "steps", "wall_seconds", "node"]
    board = trials.sort_values([sweep.metric], ascending=sweep.mode == "min", na_position="last", kind="stable")
    out.write("## Trials\n\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for _, row in board.iterrows():
        row = {**row, "status": STATUS_WORDS.get(row.get("status"), row.get("status"))}
        out.write("| " + " | ".join(_format(row.get(column)) for column in columns) + " |\n")
    out.write("\n")


# The trials table names a status as the counts above it do; trials.parquet keeps Tune's.
STATUS_WORDS = {COMPLETED: "completed", STOPPED_EARLY: "stopped early", ERROR: "errored"}


def _write_errors(out: io.StringIO, trials: Any) -> None:
    failed = trials[trials["status"] == ERROR] if len(trials) else trials
    if not len(failed):
        return
    out.write("## Errors\n\n")
    for _, row in failed.iterrows():
        out.write(f"- `{row['trial_id']}`: {row['error']}\n")
    out.write("\n")


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _pct(value: Any) -> str:
    number = metric_value(value)
    return "-" if math.isnan(number) else f"{100 * number:.2f}%"


def _points(value: Any, sign: bool = False) -> str:
    number = metric_value(value)
    return "-" if math.isnan(number) else (f"{100 * number:+.2f}" if sign else f"{100 * number:.2f}")
