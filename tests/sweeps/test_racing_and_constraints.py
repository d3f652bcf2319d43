"""The search's Optuna study and the race of finalists, on planted results (no training).

- An ASHA-stopped trial reaches the study as PRUNED, with the WER it was stopped at.
- A trial over a budget is infeasible to Optuna (a constraint > 0), one within it feasible.
- Racing picks the finalist with the better mean over seeds, not the luckier single seed,
  and never one whose mean WER increase breaks the budget.
"""

from __future__ import annotations

import warnings

import math
import re

import pandas as pd
import pytest

from sweeps.search.config import SweepConfig
from sweeps.search.racing import choose_finalists, race_recipes, race_table, race_winner, racing_seeds
from sweeps.search.results import best_trial
from sweeps.search.summary import describe_best, summary_markdown
from sweeps.search.trial import COMPLETED, STOPPED_EARLY

SWEEP = SweepConfig.from_dict({
    "name": "race",
    "trial": {"eval_every": 50, "max_steps": 200, "model": "some/model",
              "eval_manifests": {"dev": "dev.jsonl", "canary": "canary.jsonl"}},
    "search": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "target_modules": ["qv", "fc"]},
    "num_samples": 5,  # search_table()'s trials: a finished search
    "max_wer_increase": {"canary": 0.02},
    "confirm_on": {"test": "test.jsonl"},
    "racing": {"finalists": 2, "seeds": 2},
})


def result_row(trial_id: str, lr: float, dev: float, canary_rise: float, seed: int = 42, status: str = COMPLETED) -> dict:
    return {
        "trial_id": trial_id, "trial_number": int(trial_id[1:]) if trial_id[1:].isdigit() else 0, "status": status,
        "learning_rate": lr, "target_modules": ["fc1", "fc2"], "target_module_set": "fc", "seed": seed,
        "eval_wer": dev, "baseline_wer": 0.3, "dev_tuned_wer": dev, "dev_baseline_wer": 0.3,
        "canary_baseline_wer": 0.02, "canary_tuned_wer": 0.02 + canary_rise, "steps": 200, "wall_seconds": 10.0,
        "node": "host", "error": None, "trial_dir": f"/x/trial_{trial_id}", "eval_manifests": ["dev=dev.jsonl", "canary=canary.jsonl"],
        "model": "some/model", "max_steps": 200, "eval_every": 50,
    }


def search_table() -> pd.DataFrame:
    return pd.DataFrame([
        result_row("t1", 1e-3, 0.20, 0.010),   # the luckier single seed
        result_row("t2", 2e-3, 0.21, 0.012),   # better on average
        result_row("t3", 3e-3, 0.15, 0.050),   # best WER, far over the budget: never a finalist
        result_row("t4", 4e-3, 0.10, 0.000, status=STOPPED_EARLY),  # partial training: never a finalist
        result_row("t5", 5e-3, 0.30, 0.000),   # third: not among 2 finalists
    ])


def race_rows(recipe_lr: float, devs: list[float], rises: list[float]) -> list[dict]:
    return [result_row(f"r{recipe_lr}{seed}", recipe_lr, dev, rise, seed=seed)
            for seed, dev, rise in zip(racing_seeds(42, 2), devs, rises)]


def test_finalists_are_the_best_fully_trained_recipes_within_the_budget():
    finalists = choose_finalists(search_table(), SWEEP, COMPLETED)
    assert [f["trial_id"] for f in finalists] == ["t1", "t2"]
    recipes = race_recipes(finalists, SWEEP)
    assert [(r["learning_rate"], r["seed"]) for r in recipes] == [(1e-3, 1042), (1e-3, 2042), (2e-3, 1042), (2e-3, 2042)]
    assert all(r["eval_every"] == 0 and "output_dir" not in r for r in recipes)
    assert {r["target_modules"] for r in recipes} == {"fc"}  # by set name, as the search's configs


def test_racing_picks_the_better_mean_not_the_luckier_seed():
    finalists = choose_finalists(search_table(), SWEEP, COMPLETED)
    race = pd.DataFrame(race_rows(1e-3, [0.26, 0.25], [0.01, 0.01]) + race_rows(2e-3, [0.21, 0.22], [0.01, 0.012]))
    entries = race_table(finalists, race, SWEEP, COMPLETED)
    by_id = {entry["trial_id"]: entry for entry in entries}
    assert by_id["t1"]["seeds"] == [42, 1042, 2042] and by_id["t1"]["mean_wer"] == pytest.approx(0.2366, abs=1e-3)
    assert by_id["t2"]["mean_wer"] == pytest.approx(0.2133, abs=1e-3)
    assert race_winner(entries, SWEEP)["trial_id"] == "t2"

    best = best_trial(search_table(), SWEEP, entries)
    assert best["trial_id"] == "t2" and best["chosen_by"] == "racing" and best["selection_seeds"] == [42, 1042, 2042]
    assert best["metric"] == pytest.approx(0.2133, abs=1e-3) and best["config"]["learning_rate"] == 2e-3
    assert best["select_on"] == "dev" and best["confirm_on"] == {"name": "test", "path": "test.jsonl"}
    assert [f["trial_id"] for f in best["race"]["finalists"]] == ["t1", "t2"]


def test_a_finalist_whose_mean_breaks_the_budget_cannot_win():
    from sweeps.search.results import SweepResults

    finalists = choose_finalists(search_table(), SWEEP, COMPLETED)
    # t2 is better on dev, but its canary rise on the new seeds takes its mean over +2 points.
    race = pd.DataFrame(race_rows(1e-3, [0.22, 0.22], [0.01, 0.01]) + race_rows(2e-3, [0.20, 0.20], [0.03, 0.04]))
    entries = race_table(finalists, race, SWEEP, COMPLETED)
    assert [e["keeps_budgets"] for e in entries] == [True, False]
    assert race_winner(entries, SWEEP)["trial_id"] == "t1"

    everyone_over = pd.DataFrame(race_rows(1e-3, [0.2, 0.2], [0.05, 0.05]) + race_rows(2e-3, [0.2, 0.2], [0.05, 0.05]))
    entries = race_table(finalists, everyone_over, SWEEP, COMPLETED)
    assert best_trial(search_table(), SWEEP, entries) is None
    summary = summary_markdown(search_table(), None, SWEEP, "/x", None, entries)
    assert ("No finalist that completed its race runs (2 of 2; see the race table) kept canary within +2 points of its "
            "baseline on the mean over its seeds, though every finalist kept it on the search trial's own seed") in summary

    # One finalist over the budget on its mean, the other with a failed race run: the reason names both.
    failed = pd.DataFrame(race_rows(1e-3, [0.2, 0.2], [0.05, 0.05]) + race_rows(2e-3, [0.2, 0.2], [0.01, 0.01]))
    failed.loc[3, "status"] = "ERROR"
    entries = race_table(finalists, failed, SWEEP, COMPLETED)
    assert best_trial(search_table(), SWEEP, entries) is None
    printed = describe_best(SweepResults(trials=search_table(), best=None, summary_markdown="", race=entries), SWEEP)
    assert "No finalist that completed its race runs (1 of 2; see the race table) kept canary within +2 points" in printed


def test_the_summary_and_console_say_how_the_winner_was_chosen():
    from sweeps.search.results import SweepResults

    finalists = choose_finalists(search_table(), SWEEP, COMPLETED)
    race = pd.DataFrame(race_rows(1e-3, [0.26, 0.25], [0.01, 0.01]) + race_rows(2e-3, [0.21, 0.22], [0.01, 0.012]))
    entries = race_table(finalists, race, SWEEP, COMPLETED)
    best = best_trial(search_table(), SWEEP, entries)
    summary = summary_markdown(search_table(), best, SWEEP, "/x", None, entries)
    assert "## Finalists raced across seeds" in summary and "21.33% ± 0.58" in summary
    trials_table = summary.split("## Trials")[1]
    assert "| completed |" in trials_table and "TERMINATED" not in trials_table  # as the counts above it say
    assert "`test` (`test.jsonl`) is kept for repro's confirmation" in summary
    printed = describe_best(SweepResults(trials=search_table(), best=best, summary_markdown=summary, race=entries), SWEEP)
    assert "Best trial t2" in printed and "mean dev WER 21.33%" in printed and "seeds 42, 1042, 2042" in printed
    assert "Confirm it on test, which no trial scored" in printed


def interrupted_race() -> pd.DataFrame:
    """t1's two race runs finished, t2's two still PENDING: the race was interrupted."""
    rows = race_rows(1e-3, [0.20, 0.20], [0.01, 0.01]) + race_rows(2e-3, [0.21, 0.22], [0.01, 0.012])
    for row in rows[2:]:
        row.update(status="PENDING", eval_wer=math.nan, dev_tuned_wer=math.nan, canary_tuned_wer=math.nan)
    return pd.DataFrame(rows)


def test_an_unfinished_race_chooses_no_winner_and_says_how_to_finish_it():
    """t2 has its search seed only: its 1-seed WER must not be compared with t1's 3-seed mean."""
    from sweeps.search.racing import unfinished_race_runs
    from sweeps.search.results import SweepResults, best_file_record

    finalists = choose_finalists(search_table(), SWEEP, COMPLETED)
    entries = race_table(finalists, interrupted_race(), SWEEP, COMPLETED)
    assert [(e["trial_id"], e["race_status"], e["seeds"]) for e in entries] == [
        ("t1", "complete", [42, 1042, 2042]), ("t2", "unfinished", [42])]
    assert unfinished_race_runs(entries, SWEEP) == 2
    assert race_winner(entries, SWEEP) is None and best_trial(search_table(), SWEEP, entries) is None

    record = best_file_record(None, SWEEP, 2, entries)
    assert record["complete"] is False and record["unfinished"] == 2 and "config" not in record
    assert record["resume"] == "python -m sweeps.run --resume --name race"
    assert [f["race_status"] for f in record["race"]["finalists"]] == ["complete", "unfinished"]

    summary = summary_markdown(search_table(), None, SWEEP, "/x", None, entries)
    assert "The race of finalists is unfinished (2 race runs not finished)" in summary
    assert "python -m sweeps.run --resume --name race" in summary and '"complete": false' in summary
    assert "**unfinished** (1 of 3 seeds)" in summary and "**yes**" not in summary
    printed = describe_best(SweepResults(trials=search_table(), best=None, summary_markdown=summary, race=entries,
                                         unfinished_search=0, unfinished_race=2), SWEEP)
    assert "race of finalists is unfinished" in printed and "--resume --name race" in printed
    assert "finalist t2: 1 of 3 seeds (42), unfinished" in printed
    assert "Best trial" not in printed and "Confirm it on" not in printed


def test_a_race_not_started_yet_is_unfinished_not_a_single_seed_choice():
    """Interrupted between the search and the race (no race experiment saved): still no winner."""
    from sweeps.search.racing import unfinished_race_runs

    entries = race_table(choose_finalists(search_table(), SWEEP, COMPLETED), None, SWEEP, COMPLETED)
    assert [e["race_status"] for e in entries] == ["unfinished", "unfinished"] and unfinished_race_runs(entries, SWEEP) == 4
    assert best_trial(search_table(), SWEEP, entries) is None


def test_a_finalist_whose_race_run_failed_cannot_win_on_fewer_seeds():
    race = interrupted_race()
    race.loc[2, "status"], race.loc[3, "status"] = "ERROR", COMPLETED
    race.loc[3, ["eval_wer", "dev_tuned_wer", "canary_tuned_wer"]] = [0.10, 0.10, 0.03]
    entries = race_table(choose_finalists(search_table(), SWEEP, COMPLETED), race, SWEEP, COMPLETED)
    assert [e["race_status"] for e in entries] == ["complete", "failed"]
    assert race_winner(entries, SWEEP)["trial_id"] == "t1"  # t2's 2-seed mean (15.5%) does not count


def test_under_another_budget_an_unraced_finalist_is_marked_and_cannot_win():
    """--analyze NAME max_wer_increase.canary=0.011: t2 drops out, t5 becomes a finalist but
    was never raced; its single-seed 22% must not beat t1's 3-seed mean of 23.67%."""
    from sweeps.search.results import SweepResults

    table = search_table()
    table.loc[4, ["eval_wer", "dev_tuned_wer"]] = 0.22
    tight = SweepConfig.from_dict({**SWEEP.to_dict(), "max_wer_increase": {"canary": 0.011}})
    race = pd.DataFrame(race_rows(1e-3, [0.26, 0.25], [0.01, 0.01]) + race_rows(2e-3, [0.21, 0.22], [0.01, 0.012]))
    raced = choose_finalists(table, SWEEP, COMPLETED)
    assert [f["trial_id"] for f in raced] == ["t1", "t2"]
    entries = race_table(choose_finalists(table, tight, COMPLETED), race, tight, COMPLETED, raced=raced)
    assert [(e["trial_id"], e["race_status"], len(e["seeds"])) for e in entries] == [("t1", "complete", 3), ("t5", "not raced", 1)]
    best = best_trial(table, tight, entries)
    assert best["trial_id"] == "t1" and best["selection_seeds"] == [42, 1042, 2042]

    summary = summary_markdown(table, best, tight, "/x", None, entries)
    assert "**not raced** (1 of 3 seeds)" in summary
    assert "Finalist t5 under these budgets was not raced" in summary and "chosen among the 1 raced finalist" in summary
    printed = describe_best(SweepResults(trials=table, best=best, summary_markdown=summary, race=entries), tight)
    assert "among 1 raced finalist with" in printed and "Finalist t5 under these budgets was not raced" in printed
    assert "needs a new sweep with these budgets" in printed

    # Every finalist under the new budget unraced: no winner, and the reason says why.
    none_raced = race_table(choose_finalists(table, tight, COMPLETED)[1:], race, tight, COMPLETED, raced=raced)
    assert best_trial(table, tight, none_raced) is None
    assert "No finalist completed its race runs" in summary_markdown(table, None, tight, "/x", None, none_raced)


def test_an_interrupted_search_shows_its_best_so_far_not_a_winner_to_confirm():
    from sweeps.search.results import SweepResults, best_file_record

    plain = SweepConfig.from_dict({**SWEEP.to_dict(), "racing": {"finalists": 0, "seeds": 0}})
    table = search_table()
    table.loc[4, "status"] = "RUNNING"
    best = best_trial(table, plain)
    record = best_file_record(best, plain, 1)  # t5 still RUNNING
    assert record["complete"] is False and record["unfinished"] == 1 and record["config"] == best["config"]
    printed = describe_best(SweepResults(trials=table, best=record, summary_markdown=""), plain)
    lines = printed.splitlines()
    assert lines[1].startswith("The sweep is unfinished: 1 of its 5 search trials has not finished")
    assert "python -m sweeps.run --resume --name race" in lines[1]
    assert "Best so far: trial t1" in printed and "Confirm it on" not in printed
    summary = summary_markdown(table, record, plain, "/x", None)
    assert "## Best so far: trial `t1`" in summary and "1 unfinished" in summary
    assert best_file_record(best, plain, 0)["complete"] is True


def test_one_finalist_raced_with_one_new_seed_is_written_in_the_singular():
    """racing: {finalists: 1, seeds: 1}: the race's sentences count in the singular
    ("1 best fully trained recipe", "1 new seed", "1 finalist"), never "1 recipes"."""
    from sweeps.search.results import SweepResults

    one = SweepConfig.from_dict({**SWEEP.to_dict(), "racing": {"finalists": 1, "seeds": 1}})
    finalists = choose_finalists(search_table(), one, COMPLETED)
    raced = pd.DataFrame([result_row("r1", 1e-3, 0.20, 0.01, seed=1042)])
    entries = race_table(finalists, raced, one, COMPLETED)
    best = best_trial(search_table(), one, entries)
    summary = summary_markdown(search_table(), best, one, "/x", None, entries)
    assert ("The 1 best fully trained recipe within the budgets, to be retrained with 1 new seed; mean ± sd over the "
            "seeds it has. Only a finalist with 2 seeds (complete) can win.") in summary
    printed = describe_best(SweepResults(trials=search_table(), best=best, summary_markdown=summary, race=entries), one)
    assert "(the best mean over 2 seeds among 1 raced finalist with canary within +2 points of its baseline)" in printed

    raced.loc[0, "status"] = "ERROR"
    failed = race_table(finalists, raced, one, COMPLETED)
    assert "No finalist completed its race runs (1 finalist; see the race table)" in summary_markdown(
        search_table(), None, one, "/x", None, failed)


def test_the_overhead_ratio_counts_the_race_trials_time_too():
    """The sweep's wall time spans the search and the race: 213 s against 202 s of search and
    193 s of race trial time, 2 at a time, is an overhead of 1.08, not 213 / (202 / 2) = 2.11."""
    two = SweepConfig.from_dict({**SWEEP.to_dict(), "max_concurrent_trials": 2})
    table = search_table()
    table["wall_seconds"] = [50.0, 50.0, 50.0, 2.0, 50.0]
    race = pd.DataFrame(race_rows(1e-3, [0.26, 0.25], [0.01, 0.01]) + race_rows(2e-3, [0.21, 0.22], [0.01, 0.012]))
    race["wall_seconds"] = [48.0, 48.0, 48.0, 49.0]
    entries = race_table(choose_finalists(table, two, COMPLETED), race, two, COMPLETED)
    summary = summary_markdown(table, best_trial(table, two, entries), two, "/x", 213.0, entries, race_trials=race)
    assert "Trial time: 395 s summed over trials (202 s search, 193 s race); sweep wall time 213 s (search and race); overhead ratio 1.08" in summary
    plain = summary_markdown(table, best_trial(table, two), two, "/x", 101.0)  # no race: the search's time alone
    assert "Trial time: 202 s summed over trials; sweep wall time 101 s; overhead ratio 1.00" in plain


def lr_space(trial) -> dict:  # a module-level function: the searcher's saved state pickles it
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True)}


def searcher(budgets=(("canary", 0.02),), objectives=(), **study):
    pytest.importorskip("ray")
    import optuna

    from sweeps.search.searcher import SweepSearch, objective_metrics

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric = objective_metrics("dev", objectives) if objectives else "eval_wer"
    return SweepSearch(
        space=lr_space, metric=metric, mode=["min"] * len(metric) if objectives else "min",
        sampler=optuna.samplers.TPESampler(seed=0), budgets=budgets, **study,
    )


def report(wer: float, rise: float, iteration: int, completed: bool) -> dict:
    return {"eval_wer": wer, "canary_wer_increase": rise, "training_iteration": iteration, "completed": completed}


def test_an_asha_stopped_trial_is_pruned_in_the_study_at_the_wer_it_was_stopped_at():
    import optuna

    search = searcher()
    search.suggest("stopped")
    search.on_trial_result("stopped", report(0.5, 0.01, 1, False))
    # ASHA stopped it on its second report, which Tune passes only to on_trial_complete.
    search.on_trial_complete("stopped", result=report(0.45, 0.01, 2, False))
    search.suggest("done")
    search.on_trial_result("done", report(0.4, 0.01, 1, False))
    search.on_trial_complete("done", result=report(0.3, 0.01, 2, True))
    stopped, done = search._ot_study.trials
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.intermediate_values == {1: 0.5, 2: 0.45}
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == 0.3
    assert done.intermediate_values == {1: 0.4, 2: 0.3}  # its last report too, which Tune passes only here


@pytest.mark.parametrize("completed", [True, False])
def test_a_resumed_sweep_may_end_a_trial_the_study_already_holds_as_finished(completed):
    """After --resume Tune ends a finished trial again, and the restored searcher has lost
    track of it: that must not fail (Optuna refuses to update a finished trial)."""
    import optuna

    search = searcher()
    search.suggest("t")
    ot_trial = search._ot_trials["t"]
    search.on_trial_complete("t", result=report(0.3, 0.01, 2, completed))
    search._completed_trials.discard("t")  # as the searcher's state is restored by --resume
    search._ot_trials["t"] = ot_trial
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor warn that a constraint is set twice
        search.on_trial_complete("t", result=report(0.3, 0.01, 2, completed))
    [trial] = search._ot_study.trials
    assert trial.state == (optuna.trial.TrialState.COMPLETE if completed else optuna.trial.TrialState.PRUNED)


def test_a_resumed_sweep_may_report_again_on_a_trial_the_study_already_holds_as_finished(tmp_path):
    """A trial that ended in optuna.db after Ray's last save comes back unfinished on --resume
    and reports again: that must not stop the sweep (Optuna refuses to update a finished trial)."""
    import optuna

    from sweeps.search.space import study_storage

    study = {"storage": study_storage(tmp_path / "optuna.db"), "study_name": "r3"}
    search = searcher(**study)
    search.suggest("t")
    search.save(str(tmp_path / "searcher-state.pkl"))  # Ray's last save before the kill
    search.on_trial_result("t", report(0.4, 0.01, 1, False))
    search.on_trial_complete("t", result=report(0.3, 0.01, 2, True))

    restored = searcher(**study)
    restored.restore(str(tmp_path / "searcher-state.pkl"))
    restored.on_trial_result("t", report(0.41, 0.01, 1, False))  # its rerun's first report
    restored.on_trial_complete("t", result=report(0.3, 0.01, 2, True))
    [trial] = optuna.load_study(study_name="r3", storage=study_storage(tmp_path / "optuna.db")).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.3 and trial.intermediate_values == {1: 0.4, 2: 0.3}


def test_a_resumed_searcher_fails_the_study_trial_asked_after_its_saved_state(tmp_path, capsys):
    """kill -9 of the driver after an ask() that optuna.db recorded but Ray's saved searcher
    state did not: on --resume that trial must not stay RUNNING in the study forever."""
    import optuna

    from sweeps.search.space import study_storage

    State = optuna.trial.TrialState
    study = {"storage": study_storage(tmp_path / "optuna.db"), "study_name": "r2"}
    search = searcher(**study)
    search.suggest("done")
    search.on_trial_complete("done", result=report(0.3, 0.01, 2, True))
    search.suggest("running")  # unfinished: --resume continues it from its checkpoint
    search.save(str(tmp_path / "searcher-state.pkl"))  # Ray's last save before the kill
    search.suggest("lost")  # asked (so RUNNING in optuna.db), then the driver died

    restored = searcher(**study)  # Tuner.restore's searcher, then its saved state
    restored.restore(str(tmp_path / "searcher-state.pkl"))
    assert [t.state for t in restored._ot_study.trials] == [State.COMPLETE, State.RUNNING, State.FAIL]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "trial(s) 2 were asked before the driver stopped" in out and "FAIL" in out

    # The sweep goes on: the resumed trial ends, a new one is asked in place of the lost one.
    restored.on_trial_complete("running", result=report(0.2, 0.01, 2, True))
    restored.suggest("new")
    reloaded = optuna.load_study(study_name="r2", storage=study_storage(tmp_path / "optuna.db"))
    assert [t.state for t in reloaded.trials] == [State.COMPLETE, State.COMPLETE, State.FAIL, State.RUNNING]
    assert restored.fail_orphaned_trials() == []  # the new trial is tracked: nothing more to fail


def test_a_resumed_searcher_queues_again_a_point_to_evaluate_the_sweep_never_ran(tmp_path, capsys):
    """kill -9 of the driver after Optuna handed out an enqueued point (the user's recipe)
    and before Ray saved that trial: the resumed sweep must still try that recipe, once. A
    lost sampled trial is not queued again, nor a point whose trial the sweep ran."""
    import pickle

    import optuna

    from sweeps.search.space import study_storage

    State = optuna.trial.TrialState
    study, points = {"storage": study_storage(tmp_path / "optuna.db"), "study_name": "r4"}, [{"lr": 1e-3}, {"lr": 2e-3}]
    search = searcher(points_to_evaluate=points, **study)
    as_built = pickle.dumps(search)  # Tuner.restore unpickles the searcher as the sweep built it (tuner.pkl)
    assert search.suggest("ran") == points[0]
    search.save(str(tmp_path / "searcher-state.pkl"))  # Ray's last save before the kill
    assert search.suggest("lost point") == points[1]
    search.suggest("lost sample")  # both handed out, then the driver died

    restored = pickle.loads(as_built)
    restored.restore(str(tmp_path / "searcher-state.pkl"))
    assert restored.suggest("point again") == points[1]
    out = capsys.readouterr().out
    assert "trial(s) 1, 2 were asked" in out and "the points_to_evaluate recipe of trial(s) 1 is queued again" in out
    assert restored.suggest("new sample") not in points  # no point twice: the point that ran is not queued again
    assert [t.state for t in restored._ot_study.trials] == [State.RUNNING, State.FAIL, State.FAIL, State.RUNNING, State.RUNNING]


def test_a_trial_over_the_budget_is_infeasible_to_optuna():
    search = searcher()
    search.suggest("over")
    search.on_trial_complete("over", result=report(0.1, 0.05, 2, True))
    search.suggest("within")
    search.on_trial_complete("within", result=report(0.2, 0.01, 2, True))
    over, within = search._ot_study.trials
    assert over.constraints == {"canary": pytest.approx(0.03)} and within.constraints == {"canary": pytest.approx(-0.01)}


def test_a_trial_at_the_budget_is_feasible_to_optuna_as_to_the_winners_choice(tmp_path):
    """Canary WER 30% -> 32% under a 2-point budget: 0.32 - 0.30 - 0.02 is 1.7e-17 in floats.
    The winner's choice counts it within (budget.over_budget's slack); Optuna must too (a
    constraint > 0 is infeasible to TPE), and the trade-off table must show no violation."""
    from sweeps.search.analysis import tradeoff_points

    rise = 0.32 - 0.30
    search = searcher()
    search.suggest("at")
    search.on_trial_complete("at", result=report(0.1, rise, 2, True))
    assert search._ot_study.trials[0].constraints["canary"] <= 0

    table = search_table()
    table.loc[0, ["canary_baseline_wer", "canary_tuned_wer"]] = [0.30, 0.32]
    plain = SweepConfig.from_dict({**SWEEP.to_dict(), "racing": "none"})
    assert best_trial(table, plain)["trial_id"] == "t1"
    points = tradeoff_points(table, plain, COMPLETED).set_index("trial_id")
    assert bool(points.loc["t1", "feasible"]) and points.loc["t1", "violation"] == 0
    assert points.loc["t3", "violation"] == pytest.approx(0.03)


def test_objectives_make_a_multi_objective_study():
    import optuna

    search = searcher(objectives=("dev", "canary"))
    search.suggest("a")
    search.on_trial_complete("a", result=report(0.2, 0.01, 2, True))
    search.suggest("b")
    search.on_trial_complete("b", result=report(0.1, 0.03, 1, False))
    a, b = search._ot_study.trials
    assert a.values == [0.2, 0.01] and len(search._ot_study.directions) == 2
    assert b.state == optuna.trial.TrialState.PRUNED and b.constraints == {"canary": pytest.approx(0.01)}


def test_the_pareto_front_and_the_least_violating_trials_are_reported(tmp_path):
    from sweeps.search import analysis

    points = analysis.tradeoff_points(search_table(), SWEEP, COMPLETED)
    assert dict(zip(points["trial_id"], points["pareto"])) == {"t1": True, "t2": False, "t3": True, "t5": True}
    assert points.set_index("trial_id").loc["t3", "violation"] == pytest.approx(0.03)
    assert analysis.plot_tradeoff(points, SWEEP, tmp_path / "tradeoff.png", "t1") and (tmp_path / "tradeoff.png").stat().st_size > 1000

    over = search_table()
    over["canary_tuned_wer"] = over["canary_baseline_wer"] + over["learning_rate"] * 30  # violation grows with lr
    summary = summary_markdown(over, None, SWEEP, "/x", None, None, tmp_path)
    assert "No fully trained trial keeps canary within +2 points" in summary and "Pareto front" in summary
    hint = analysis.move_hint(analysis.tradeoff_points(over, SWEEP, COMPLETED), "learning_rate")
    assert hint.startswith("lower learning_rate")
    assert math.isclose(analysis.pareto_front([[1, 1], [2, 2], [0, 3]]).count(True), 2)


def planted_study(path, sweep: SweepConfig, trials: int = 12):
    """A stored study where a low learning rate alone keeps the canary budget and gives the
    best WER, and target_modules does nothing."""
    import optuna

    from sweeps.search.space import study_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=sweep.name, storage=study_storage(path))
    for index in range(trials):
        trial = study.ask()
        lr = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        trial.suggest_categorical("target_modules", ["qv", "fc"])
        trial.set_constraint("canary", lr * 10 - 0.02)
        study.tell(trial, 0.2 + lr * 5)
    return study


def test_importances_come_from_the_stored_study_and_name_what_decides_the_violation(tmp_path):
    from sweeps.search import analysis

    planted_study(tmp_path / "optuna.db", SWEEP)
    for target in ("wer", "violation"):
        importances = analysis.parameter_importances(analysis.load_study(tmp_path / "optuna.db", SWEEP), SWEEP, target=target)
        assert next(iter(importances)) == "learning_rate" and importances["learning_rate"] > 0.5, (target, importances)
    assert analysis.parameter_importances(analysis.load_study(tmp_path / "missing.db", SWEEP), SWEEP) == {}

    over = search_table()
    over["canary_tuned_wer"] = over["canary_baseline_wer"] + over["learning_rate"] * 30
    summary = summary_markdown(over, None, SWEEP, "/x", None, None, tmp_path)
    assert "most decides the budget violation is `learning_rate`" in summary and "lower learning_rate" in summary
    assert "## Parameter importance for a low `dev` WER" in summary


def test_a_recipe_is_trained_once_and_a_proposal_of_it_again_is_told_its_result(capsys):
    """Every trial trains with one seed, so a repeat would cost a trial and show nothing new:
    on a grid of 4 recipes, 4 Tune trials train 4 different ones; each repeat Optuna proposes
    is told the earlier trial's WER, reports and constraint (``repeat_of``); with every recipe
    trained, the next trial trains a repeat and says so."""
    pytest.importorskip("ray")
    import optuna

    from sweeps.search.space import build_search_space, build_searcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = SweepConfig.from_dict({**SWEEP.to_dict(), "points_to_evaluate": [], "search": {
        "learning_rate": {"low": 1e-3, "high": 2e-3, "log": True, "grid": 2}, "target_modules": ["qv", "fc"]}})
    search = build_searcher(sweep, build_search_space(sweep))
    trained = []
    for number in range(4):
        config = search.suggest(f"t{number}")
        trained.append((config["learning_rate"], config["target_modules"]))
        search.on_trial_result(f"t{number}", report(0.5 - number / 100, 0.0, 1, False))
        search.on_trial_complete(f"t{number}", result=report(0.4 - number / 100, 0.01 * number, 2, True))
    assert sorted(trained) == [(1e-3, "fc"), (1e-3, "qv"), (2e-3, "fc"), (2e-3, "qv")]
    study = search._ot_study.trials
    repeats = [t for t in study if "repeat_of" in t.user_attrs]
    assert repeats and len(study) == 4 + len(repeats)  # this seed's TPE proposes trained recipes
    for repeat in repeats:
        earlier = study[repeat.user_attrs["repeat_of"]]
        assert "repeat_of" not in earlier.user_attrs and search._space.recipe(repeat.params) == search._space.recipe(earlier.params)
        assert (repeat.value, repeat.intermediate_values, repeat.constraints) == (earlier.value, earlier.intermediate_values, earlier.constraints)
    assert re.search(r"search: Optuna proposed (a recipe|\d recipes) already trained \(by trial t\d", capsys.readouterr().out)

    config = search.suggest("t4")  # every recipe trained: the trial trains a repeat
    assert (config["learning_rate"], config["target_modules"]) in trained
    assert re.search(r"no new recipe in 20 proposals, so this trial trains trial t\d's again", capsys.readouterr().out)
    assert search._ot_study.trials[-1].state == optuna.trial.TrialState.RUNNING


def test_importances_count_each_recipe_once_not_its_told_repeats(tmp_path):
    """A repeat told a trained recipe's result (``repeat_of``) is no new evidence: 30 copies of
    one trial must not change what the importances say."""
    import optuna

    from sweeps.search import analysis

    study = planted_study(tmp_path / "optuna.db", SWEEP)
    before = {target: analysis.parameter_importances(study, SWEEP, target=target) for target in ("wer", "violation")}
    earlier = study.trials[0]
    for _ in range(30):
        study.add_trial(optuna.trial.create_trial(params=earlier.params, distributions=earlier.distributions, value=earlier.value,
                                                  user_attrs={"repeat_of": earlier.number}, system_attrs=earlier.system_attrs))
    for target, importances in before.items():
        assert analysis.parameter_importances(study, SWEEP, target=target) == pytest.approx(importances), target
