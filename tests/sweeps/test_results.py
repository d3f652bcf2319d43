"""Choosing the winner and writing it up, from a results table (no Ray run needed)."""

from __future__ import annotations

import math

import pandas as pd

from sweeps.search.results import SweepResults, _status, best_trial
from sweeps.search.summary import describe_best, summary_markdown
from sweeps.search.config import SweepConfig
from trainable.config import TrialConfig

SWEEP = SweepConfig.from_dict({
    "name": "pick",
    # Eval sets named here, not the demo's defaults: the rows below carry heldout_* columns.
    "trial": {"eval_every": 50, "model": "some/model", "eval_manifests": {"heldout": "h.jsonl", "canary": "c.jsonl"}},
    "search": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "target_modules": ["qv", "qkvo"]},
    # 1: every table below is a finished search (one of fewer trials than num_samples is unfinished).
    "num_samples": 1,
})


def row(number: int, status: str, eval_wer: float, lr: float, modules=("q_proj", "v_proj"), error=None) -> dict:
    return {
        "trial_number": number, "trial_id": f"t{number}", "status": status, "learning_rate": lr,
        "target_modules": list(modules), "target_module_set": "qv" if len(modules) == 2 else "qkvo",
        "eval_wer": eval_wer, "best_eval_wer": eval_wer, "baseline_wer": 0.6,
        "heldout_baseline_wer": 0.6, "heldout_tuned_wer": eval_wer, "canary_baseline_wer": 0.2, "canary_tuned_wer": 0.21,
        "steps": 300, "wall_seconds": 100.0, "node": "host", "error": error, "trial_dir": f"/x/trial_t{number}",
    }


def test_the_best_completed_trial_wins_not_an_early_stopped_one():
    table = pd.DataFrame([
        row(1, "TERMINATED", 0.40, 1e-3),
        row(2, "STOPPED_EARLY", 0.10, 5e-3),  # its WER is from partial training
        row(3, "ERROR", math.nan, 9e-3, error="trial t3 failed: boom"),
        row(4, "TERMINATED", 0.30, 2e-3, modules=("q_proj", "k_proj", "v_proj", "o_proj")),
    ])
    best = best_trial(table, SWEEP)
    assert best["trial_id"] == "t4" and best["metric"] == best["tuned_wer"] == 0.30 and best["baseline_wer"] == 0.6
    recipe = TrialConfig.from_dict(best["config"])
    assert recipe.learning_rate == 2e-3 and recipe.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert recipe.model == "some/model" and recipe.output_dir == "outputs/pick-best"
    assert best["eval_sets"]["canary"] == {"baseline_wer": 0.2, "tuned_wer": 0.21}

    summary = summary_markdown(table, best, SWEEP, "/x", wall_seconds=250.0)
    assert "4 trials: 2 completed, 1 stopped early, 1 errored" in summary
    assert "overhead ratio 1.25" in summary  # 250 s / (400 s / 2 concurrent)
    assert "trial t3 failed: boom" in summary
    header = next(line for line in summary.splitlines() if line.startswith("| trial_number"))
    assert "canary_tuned_wer" in header and "heldout_tuned_wer" not in header  # held-out is eval_wer already

    printed = describe_best(SweepResults(trials=table, best=best, summary_markdown=summary), SWEEP)
    assert "target_modules=qkvo" in printed and "tuned 30.00% vs baseline 60.00%" in printed


def test_a_winner_no_better_than_the_base_model_is_called_least_bad_not_best(tmp_path):
    table = pd.DataFrame([row(1, "TERMINATED", 0.65, 1e-3), row(2, "TERMINATED", 0.70, 2e-3)])  # baseline 0.6
    best = best_trial(table, SWEEP)
    printed = describe_best(SweepResults(trials=table, best=best, summary_markdown=""), SWEEP)
    assert "No recipe beat the base model on heldout: the least bad WER is 65.00% against the base model's 60.00%" in printed
    assert "Least bad trial t1" in printed and "Best trial" not in printed
    summary = summary_markdown(table, best, SWEEP, "/x", None, results_dir=tmp_path)
    assert "## Least bad: trial `t1`" in summary and "No recipe beat the base model" in summary
    better = pd.DataFrame([row(1, "TERMINATED", 0.55, 1e-3)])
    printed = describe_best(SweepResults(trials=better, best=best_trial(better, SWEEP), summary_markdown=""), SWEEP)
    assert "Best trial t1" in printed and "No recipe beat" not in printed


def test_no_completed_trial_means_no_best():
    table = pd.DataFrame([row(1, "ERROR", math.nan, 1e-3, error="x"), row(2, "STOPPED_EARLY", 0.2, 1e-3)])
    assert best_trial(table, SWEEP) is None
    assert "No trial completed" in summary_markdown(table, None, SWEEP, "/x", None)


def test_a_trial_without_its_final_report_was_stopped_early():
    assert _status("TERMINATED", {"completed": True}) == "TERMINATED"
    assert _status("TERMINATED", {"completed": False}) == "STOPPED_EARLY"
    assert _status("ERROR", {}) == "ERROR" and _status("RUNNING", {}) == "RUNNING"


def test_a_canary_budget_excludes_trials_that_forget_too_much():
    """The best held-out trial broke the canary budget: the next best within it wins."""
    budgeted = SweepConfig.from_dict({**SWEEP.to_dict(), "trial": {**SWEEP.to_dict()["trial"], "eval_manifests": {
        "heldout": "h.jsonl", "canary": "c.jsonl"}}, "max_wer_increase": {"canary": 0.02}})
    rows = [row(1, "TERMINATED", 0.20, 1e-3), row(2, "TERMINATED", 0.30, 2e-3), row(3, "TERMINATED", 0.25, 3e-3)]
    rows[0]["canary_tuned_wer"] = 0.2301  # +3.01 points
    rows[2]["canary_tuned_wer"] = 0.22    # +2 points exactly: within
    table = pd.DataFrame(rows)
    assert best_trial(table, SWEEP)["trial_id"] == "t1"  # without a budget
    best = best_trial(table, budgeted)
    assert best["trial_id"] == "t3" and best["max_wer_increase"] == {"canary": 0.02}
    summary = summary_markdown(table, best, budgeted, "/x", None)
    assert "Chosen among the 2 of 3 completed trials with canary within +2 points of its baseline" in summary
    assert "best of 2 completed trials with canary within +2 points" in describe_best(
        SweepResults(trials=table, best=best, summary_markdown=summary), budgeted)

    for r in rows:
        r["canary_tuned_wer"] = 0.5
    table = pd.DataFrame(rows)
    assert best_trial(table, budgeted) is None
    assert "No completed trial kept canary within +2 points of its baseline (3 completed)" in summary_markdown(table, None, budgeted, "/x", None)


def test_a_budgeted_sweep_whose_trials_all_errored_before_reporting_still_gets_its_summary(tmp_path):
    """No trial reported, so the table has no per-set WER columns: the summary must still be
    written (it is where the errors are listed), not fail on the missing columns."""
    budgeted = SweepConfig.from_dict({**SWEEP.to_dict(), "max_wer_increase": {"canary": 0.02}})
    unreported = {key: value for key, value in row(1, "ERROR", math.nan, 1e-3, error="trial t1 failed: boom").items()
                  if not key.startswith(("heldout_", "canary_"))}
    table = pd.DataFrame([unreported])
    assert best_trial(table, budgeted) is None
    summary = summary_markdown(table, None, budgeted, "/x", None, results_dir=tmp_path)
    assert "No trial completed" in summary and "trial t1 failed: boom" in summary


def test_the_overhead_ratio_divides_by_the_trials_the_cluster_fit_not_max_concurrent_trials():
    """--num-cpus 1 with resources_per_trial.cpu 1 runs one trial at a time whatever
    max_concurrent_trials (2) says: 400 s of trial time in 420 s of wall time is an overhead
    of 1.05, not 420 / (400 / 2) = 2.10. The line says which limit it used."""
    from sweeps.search.experiment import trial_concurrency

    table = pd.DataFrame([row(1, "TERMINATED", 0.40, 1e-3), row(2, "TERMINATED", 0.30, 2e-3),
                          row(3, "TERMINATED", 0.35, 3e-3), row(4, "TERMINATED", 0.33, 4e-3)])
    one_cpu = trial_concurrency(SWEEP, [{"Alive": True, "Resources": {"CPU": 1.0, "memory": 1e9}}])
    summary = summary_markdown(table, best_trial(table, SWEEP), SWEEP, "/x", 420.0, concurrency=one_cpu)
    assert ("overhead ratio 1.05, wall time over trial time / 1 trial at once (the cluster's 1 CPU fit 1 trial of "
            "resources_per_trial 1 CPU, fewer than max_concurrent_trials 2).") in summary
    four_cpus = trial_concurrency(SWEEP, [{"Alive": True, "Resources": {"CPU": 4.0}}])
    assert ("overhead ratio 2.10, wall time over trial time / 2 trials at once (max_concurrent_trials; the cluster's "
            "4 CPU fit 4 trials of resources_per_trial 1 CPU).") in summary_markdown(table, None, SWEEP, "/x", 420.0, concurrency=four_cpus)
    # Without a record of the cluster (a run.json from before it was kept), the line says so.
    assert "trial time / 2 trials at once (max_concurrent_trials; how many trials the cluster fit was not recorded)." in \
        summary_markdown(table, None, SWEEP, "/x", 420.0)


def test_trials_fit_node_by_node_on_the_scarcest_resource():
    """A trial holds its resources on one node: two 3-CPU nodes fit two 2-CPU trials, not three;
    a GPU fraction fits as many trials as it divides a GPU; a dead node fits none."""
    from sweeps.search.experiment import TrialConcurrency, trial_concurrency

    def fit(cpu: float, gpu: float, *nodes: dict, alive: bool = True) -> int:
        sweep = SweepConfig.from_dict({**SWEEP.to_dict(), "max_concurrent_trials": 8, "resources_per_trial": {"cpu": cpu, "gpu": gpu}})
        return trial_concurrency(sweep, [{"Alive": alive, "Resources": node} for node in nodes]).trials_that_fit

    assert fit(2, 0, {"CPU": 3.0}, {"CPU": 3.0}) == 2
    assert fit(1, 0.25, {"CPU": 16.0, "GPU": 1.0}) == 4 and fit(1, 0.5, {"CPU": 1.0, "GPU": 1.0}) == 1
    assert fit(1, 1, {"CPU": 8.0}) == 0 and fit(1, 0, {"CPU": 4.0}, alive=False) == 0
    recorded = trial_concurrency(SWEEP, [{"Alive": True, "Resources": {"CPU": 1.0}}])
    assert TrialConcurrency.from_dict(recorded.to_dict()) == recorded and recorded.trials == 1


def test_the_console_and_summary_count_the_trials_alike_and_the_counts_add_up():
    """An interrupted search of 5 trials: 4 started (one still RUNNING), 1 never started.
    Both say 5 trials, 2 of them unfinished, as the unfinished note does; the console
    once said '4 trials, 2 completed, 1 stopped early, 0 errored' (3 of 4)."""
    five = SweepConfig.from_dict({**SWEEP.to_dict(), "num_samples": 5})
    table = pd.DataFrame([row(1, "TERMINATED", 0.40, 1e-3), row(2, "STOPPED_EARLY", 0.5, 2e-3),
                          row(3, "TERMINATED", 0.30, 3e-3), row(4, "RUNNING", 0.45, 4e-3)])
    counts = "5 trials: 2 completed, 1 stopped early, 0 errored, 2 unfinished"
    summary = summary_markdown(table, None, five, "/x", None)
    assert f"\n{counts}.\n" in summary and "2 of its 5 search trials have not finished" in summary
    printed = describe_best(SweepResults(trials=table, best=None, summary_markdown=summary), five).splitlines()
    assert printed[0] == f"Sweep pick, {counts}." and printed[1].startswith("The sweep is unfinished: 2 of its 5 search trials")

    finished = table.iloc[:3]
    three = SweepConfig.from_dict({**SWEEP.to_dict(), "num_samples": 3})
    assert "\n3 trials: 2 completed, 1 stopped early, 0 errored.\n" in summary_markdown(finished, None, three, "/x", None)
    assert describe_best(SweepResults(trials=finished, best=None, summary_markdown=""), three).startswith(
        "Sweep pick, 3 trials: 2 completed, 1 stopped early, 0 errored.\n")


def test_the_overhead_ratio_is_given_only_for_a_finished_sweep_whose_trials_reported_their_time():
    """An interrupted sweep's unfinished trials ran on after their last report, so its trial
    time falls short of what the wall time holds: no ratio (it read 4.00 for a 2-trial
    concurrency that ran at 1.00). Trials that all errored before reporting have no time:
    'Trial time: 0 s' would be false."""
    five = SweepConfig.from_dict({**SWEEP.to_dict(), "num_samples": 5})
    table = pd.DataFrame([row(1, "TERMINATED", 0.40, 1e-3), row(2, "RUNNING", 0.45, 2e-3)])
    summary = summary_markdown(table, None, five, "/x", 100.0)
    assert "Trial time: 200 s summed over trials; sweep wall time 100 s.\n" in summary and "overhead ratio" not in summary
    two = SweepConfig.from_dict({**SWEEP.to_dict(), "num_samples": 2})
    assert "overhead ratio 1.00" in summary_markdown(table.assign(status="TERMINATED"), None, two, "/x", 100.0)

    errored = pd.DataFrame([row(n, "ERROR", math.nan, 1e-3, error="boom") for n in (1, 2)]).assign(wall_seconds=math.nan)
    summary = summary_markdown(errored, None, two, "/x", 30.0)
    assert "Sweep wall time 30 s; no trial reported its own time.\n" in summary and "Trial time" not in summary
    assert "Trial time" not in summary_markdown(errored, None, two, "/x", None)
