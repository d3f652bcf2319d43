"""The search replay on hand-made tables whose answers are known: cost accounting, random
search's expected trials-to-hit (over the sweep's space and over the table's grid), ASHA
against Ray's own scheduler, racing, the canary budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.search.asha import AshaRungs
from benchmarks.search.replay import (
    COMPLETED, STOPPED, SearcherSpec, Settings, choose_single_seed, race, replay, replay_search, run_trial, steps_to_reach,
)
from benchmarks.search.searchers import RandomSearch, ShuffledGrid, TpeSearch
from benchmarks.search.summary import quantiles, ratio_interval
from benchmarks.search.table import TableError, ground_truth, read_search_table, recipe_id, write_search_table

try:
    from search_tables import curve_to, grid, make_table, run_row, synthetic_table
except ImportError:  # tests/benchmarks imported as a package
    from tests.benchmarks.search_tables import curve_to, grid, make_table, run_row, synthetic_table

ALL_SEARCHERS = ("grid", "random", "random+asha", "tpe", "tpe+canary", "tpe+asha", "tpe+asha+pruned", "tpe+asha+canary", "tpe+asha+pruned+canary",
                 "tpe+asha+pruned+canary+dedup", "oracle+asha")


class InOrder:
    """A searcher that proposes the given recipes in turn."""

    def __init__(self, table, recipes):
        self.proposals = [table.params(recipe) for recipe in recipes]
        self.observed = []

    def propose(self):
        return self.proposals.pop(0)

    def observe(self, trial):
        self.observed.append(trial)


def settings(table, num_samples, **changes) -> Settings:
    values = dict(num_samples=num_samples, startup_trials=2, points=tuple(table.meta["points_to_evaluate"]),
                  max_t=table.meta["max_reports"], grace_period=2, reduction_factor=2.0)
    return Settings(**{**values, **changes})


def one_good_among(n: int, **row_changes):
    """n recipes at 200 steps each; only the first is within a point of the best."""
    recipes = grid(learning_rates=tuple(np.geomspace(1e-4, 1e-2, math.ceil(n / 3))))[:n]
    rows = [run_row(params, curve_to(0.20 if i == 0 else 0.30 + 0.01 * i), **row_changes) for i, params in enumerate(recipes)]
    return make_table(rows, search={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "target_modules": {"choices": ["qv", "qkvo", "fc"]}})


def test_a_searcher_proposing_the_target_reaches_it_at_exactly_its_cost():
    table = one_good_among(6)
    truth = ground_truth(table)
    assert truth.good == {table.recipes[0]} and truth.target == table.recipes[0]
    trials = replay_search(table, InOrder(table, [truth.target] * 3), num_samples=3)
    assert steps_to_reach(trials, truth.good) == 200.0
    # After two worse recipes, it costs their steps too.
    trials = replay_search(table, InOrder(table, [table.recipes[3], table.recipes[4], truth.target]), num_samples=3)
    assert steps_to_reach(trials, truth.good) == 600.0
    # Never proposed: not reached.
    trials = replay_search(table, InOrder(table, table.recipes[1:4]), num_samples=3)
    assert steps_to_reach(trials, truth.good) == math.inf


def test_the_shuffled_grid_hits_one_good_recipe_among_n_after_n_plus_1_over_2_trials_on_average():
    n = 9
    table = one_good_among(n)
    truth = ground_truth(table)
    trials_to_hit = []
    for seed in range(3000):
        trials = replay_search(table, ShuffledGrid(table, seed), num_samples=n)
        assert len({t.recipe for t in trials}) == n  # without replacement
        trials_to_hit.append(steps_to_reach(trials, truth.good) / 200)
    assert set(trials_to_hit) == set(range(1, n + 1))
    # Uniform on 1..n: mean (n + 1) / 2, standard error sqrt((n^2 - 1) / 12 / 3000) = 0.047.
    assert np.mean(trials_to_hit) == pytest.approx((n + 1) / 2, abs=0.2)


def test_random_search_hits_one_good_recipe_among_n_after_n_trials_on_average():
    """Over a space of choices only, each draw is good with probability 1/n, with replacement:
    trials to the first hit are geometric, mean n (the shuffled grid's would be (n + 1) / 2)."""
    n = 9
    table = make_table([run_row(params, curve_to(0.20 if i == 0 else 0.30 + 0.01 * i)) for i, params in enumerate(grid())],
                       search={"learning_rate": {"choices": [1e-4, 1e-3, 1e-2]}, "target_modules": {"choices": ["qv", "qkvo", "fc"]}})
    good = table.recipes[0]
    trials_to_hit, repeats = [], 0
    for seed in range(600):
        searcher, drawn = RandomSearch(table.search, [], seed), []
        while not drawn or drawn[-1] != good:
            drawn.append(table.recipe_for(searcher.propose()))
            searcher.study.tell(searcher.trial, 0.3)
        trials_to_hit.append(len(drawn))
        repeats += len(set(drawn)) < len(drawn)
    assert repeats > 100  # with replacement
    # Geometric with p = 1/9: mean 9, standard deviation sqrt(1 - p) / p = 8.5, standard error 0.35.
    assert np.mean(trials_to_hit) == pytest.approx(n, abs=1.4)


def test_random_search_draws_a_range_value_by_the_share_of_the_range_nearest_it():
    """Learning rates 1e-4, 1e-3, 1e-2 on a log range [1e-4, 1e-2]: the ends are nearest a
    quarter of the range each, the middle half of it."""
    table = one_good_among(9)
    searcher = RandomSearch(table.search, [], seed=0)
    drawn = [table.params(table.recipe_for(searcher.propose()))["learning_rate"] for _ in range(4000)]
    shares = {lr: drawn.count(lr) / len(drawn) for lr in (1e-4, 1e-3, 1e-2)}
    assert shares == pytest.approx({1e-4: 0.25, 1e-3: 0.5, 1e-2: 0.25}, abs=0.03)  # standard error 0.008


def test_tpe_startup_trials_are_random_searchs_draws_with_the_same_seed():
    """What makes the reach ratio a paired comparison: until TPE's model takes over, TPE and
    random search with the same seed propose the same recipes (the sweep's point first)."""
    table = synthetic_table(0, learning_rates=4)
    point = table.meta["points_to_evaluate"][0]
    for seed in range(5):
        tpe = replay_search(table, TpeSearch(table.search, [point], seed=seed, startup=5), num_samples=5)
        random = replay_search(table, RandomSearch(table.search, [point], seed=seed), num_samples=5)
        assert [t.recipe for t in tpe] == [t.recipe for t in random]
        assert tpe[0].recipe == table.recipe_for(point)


@pytest.mark.parametrize("searcher", ["grid", "random"])
def test_random_search_tries_the_sweeps_points_first(searcher):
    table = one_good_among(9)
    point = table.params(table.recipes[0])
    for seed in range(5):
        search = ShuffledGrid(table, seed, [point]) if searcher == "grid" else RandomSearch(table.search, [point], seed)
        trials = replay_search(table, search, num_samples=3)
        assert trials[0].recipe == table.recipes[0]


def test_the_oracle_reaches_a_good_recipe_one_trial_after_tpes_startup_unless_the_startup_did():
    """Without ASHA: reach = the startup's steps to a good recipe if random search's first
    draws (TPE's startup, same seed) hit one, else every startup trial plus one full trial."""
    table = one_good_among(9)
    truth = ground_truth(table)
    spec, startup = SearcherSpec.parse("oracle"), 3
    hits = 0
    for seed in range(40):
        oracle = replay(table, truth, spec, seed, settings(table, 6, startup_trials=startup, points=()))
        random = replay_search(table, RandomSearch(table.search, [], seed), num_samples=startup)
        in_startup = steps_to_reach(random, truth.good)
        hits += math.isfinite(in_startup)
        assert oracle.reach_steps == (in_startup if math.isfinite(in_startup) else 200.0 * (startup + 1))
        assert oracle.chosen == truth.target
    assert 0 < hits < 40  # both branches ran


def test_the_oracle_skips_a_good_recipe_that_asha_would_stop():
    """Two good recipes: the truest is a late bloomer that ASHA's rung at report 2 would stop
    after the startup's trial set the rung, so the oracle proposes the other, which finishes."""
    late, steady, bad = grid()[:3]
    table = make_table([run_row(late, [0.6, 0.59, 0.58, 0.190]), run_row(steady, [0.49, 0.39, 0.29, 0.195]),
                        run_row(bad, curve_to(0.30))], points=[bad])
    truth = ground_truth(table)
    assert truth.target == recipe_id(late) and truth.good == {recipe_id(late), recipe_id(steady)}
    outcome = replay(table, truth, SearcherSpec.parse("oracle+asha"), 0, settings(table, 2, startup_trials=1))
    assert outcome.reach_steps == 400.0  # the startup's 200, then steady's 200 (late would have cost 100 and failed)
    assert outcome.chosen == recipe_id(steady) and not outcome.stopped_good


def test_asha_stops_a_bad_curve_at_its_rung_and_charges_only_the_steps_it_ran():
    recipes = grid()[:4]
    curves = [[0.6, 0.40, 0.35, 0.30], [0.6, 0.30, 0.25, 0.20], [0.6, 0.45, 0.20, 0.10], [0.9, 0.31, 0.30, 0.29]]
    table = make_table([run_row(params, curve) for params, curve in zip(recipes, curves)])
    ids = [recipe_id(params) for params in recipes]
    rungs = AshaRungs(max_t=4, grace_period=2, reduction_factor=2)
    assert rungs.milestones == [2, 4]
    trials = replay_search(table, InOrder(table, ids), num_samples=4, rungs=rungs)
    # Rung at report 2 (step 100): the first trial sets it, the second is better (continues),
    # the third (0.45) is worse than the median of 0.40 and 0.30 and stops, whatever it would
    # have become; the fourth was bad at report 1, which is no rung, and 0.31 <= median(0.30, 0.40, 0.45).
    assert [t.status for t in trials] == [COMPLETED, COMPLETED, STOPPED, COMPLETED]
    stopped = trials[2]
    assert stopped.steps == 100 and stopped.reports == (0.6, 0.45) and stopped.dev_wer == 0.45
    assert math.isnan(stopped.canary_rise)
    assert sum(t.steps for t in trials) == 200 + 200 + 100 + 200


@pytest.mark.parametrize("max_t, grace_period, reduction_factor", [(4, 2, 2), (4, 1, 2), (9, 1, 3), (8, 1, 2), (5, 2, 2), (12, 2, 3)])
def test_asha_decides_as_rays_scheduler_does(max_t, grace_period, reduction_factor):
    """The same interleaved reports through Ray 2.60's AsyncHyperBandScheduler and through
    the replay's copy: every decision the same."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    class FakeTrial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    rng = np.random.default_rng(max_t * 100 + grace_period)
    early_stops = 0
    for _ in range(20):
        ray_asha = AsyncHyperBandScheduler(metric="eval_wer", mode="min", max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor)
        ours = AshaRungs(max_t, grace_period, reduction_factor)
        trials = [FakeTrial(str(i)) for i in range(12)]
        curves = {t.trial_id: np.round(rng.uniform(0.1, 0.6, size=max_t), 2) for t in trials}  # ties included
        reached = {t.trial_id: 0 for t in trials}
        running = list(trials[:3])
        waiting = list(trials[3:])
        for trial in running:
            ray_asha.on_trial_add(None, trial)
        while running:
            trial = running[rng.integers(len(running))]
            reached[trial.trial_id] += 1
            iteration, wer = reached[trial.trial_id], float(curves[trial.trial_id][reached[trial.trial_id] - 1])
            result = {"training_iteration": iteration, "eval_wer": wer}
            ray_stops = ray_asha.on_trial_result(None, trial, result) == TrialScheduler.STOP
            assert ours.continues(trial.trial_id, iteration, wer) == (not ray_stops), (trial.trial_id, iteration)
            if ray_stops:
                early_stops += iteration < max_t
                ray_asha.on_trial_complete(None, trial, result)
                ours.record_final(trial.trial_id, iteration, wer)
                running.remove(trial)
                if waiting:
                    running.append(waiting.pop(0))
                    ray_asha.on_trial_add(None, running[-1])
        assert [sorted(r.items()) for _, r in ray_asha._brackets[0]._rungs] == [sorted(r.items()) for _, r in ours.rungs]
    assert early_stops > 20  # the rungs did stop trials


def test_racing_picks_the_finalist_with_the_better_mean_not_the_luckier_seed():
    lucky, steady = grid()[:2]
    rows = [run_row(lucky, curve_to(0.10)), run_row(lucky, curve_to(0.20), seed=43), run_row(lucky, curve_to(0.20), seed=44),
            run_row(steady, curve_to(0.12)), run_row(steady, curve_to(0.12), seed=43), run_row(steady, curve_to(0.12), seed=44)]
    table = make_table(rows)
    truth = ground_truth(table)
    assert truth.target == recipe_id(steady)
    trials = replay_search(table, InOrder(table, [recipe_id(lucky), recipe_id(steady)]), num_samples=2)
    assert choose_single_seed(trials, table.canary_budget) == recipe_id(lucky)  # the sweep's rule today
    raced = race(trials, table, finalists=2, seeds=2)
    assert raced.winner == recipe_id(steady) and raced.steps == 4 * 200 and not raced.short_of_seeds
    # One finalist only: racing can but confirm it (and is charged for it).
    raced = race(trials, table, finalists=1, seeds=2)
    assert raced.winner == recipe_id(lucky) and raced.steps == 2 * 200
    # More seeds asked for than the table has: raced on what there is, and said so.
    assert race(trials, table, finalists=2, seeds=3).short_of_seeds


def test_a_held_out_truth_grades_the_race_winner_on_seeds_the_race_did_not_see():
    """Racing sees seeds 42-44 of each finalist; lucky is good on those and bad on 45-46. Over
    all seeds lucky looks best (the race's seeds grade it); held out, steady is the target and
    lucky is not good. A one-seed recipe keeps its seed."""
    lucky, steady, single = grid()[:3]
    rows = [run_row(lucky, curve_to(0.10 if seed < 45 else 0.30), seed=seed) for seed in (42, 43, 44, 45, 46)]
    rows += [run_row(steady, curve_to(0.19), seed=seed) for seed in (42, 43, 44, 45, 46)]
    rows += [run_row(single, curve_to(0.40))]
    table = make_table(rows)
    trials = replay_search(table, InOrder(table, [recipe_id(lucky), recipe_id(steady), recipe_id(single)]), num_samples=3)
    assert race(trials, table, finalists=2, seeds=2).winner == recipe_id(lucky)

    seen = ground_truth(table)
    assert seen.target == recipe_id(lucky) and math.isclose(seen.dev_wer(recipe_id(lucky)), 0.18) and not seen.held_out
    held_out = ground_truth(table, race_seeds=2)
    assert held_out.held_out and held_out.target == recipe_id(steady) and held_out.good == {recipe_id(steady)}
    assert math.isclose(held_out.dev_wer(recipe_id(lucky)), 0.30) and held_out.recipes.loc[recipe_id(lucky), "seeds"] == 2
    assert math.isclose(held_out.dev_wer(recipe_id(single)), 0.40) and not held_out.recipes.loc[recipe_id(single), "held_out"]
    # Racing with 3 seeds sees 45 too: only 46 is left.
    assert math.isclose(ground_truth(table, race_seeds=3).dev_wer(recipe_id(lucky)), 0.30)
    with pytest.raises(TableError, match="--extra-seeds 5"):
        ground_truth(table, race_seeds=4)


@pytest.mark.parametrize("name", ALL_SEARCHERS)
def test_an_infeasible_winner_is_never_chosen(name):
    """The best dev WER breaks the canary budget on every seed: no searcher, with or without
    racing, may pick it, and the target is the best recipe that keeps the budget."""
    recipes = grid()
    rows = [run_row(params, curve_to(0.30 + 0.01 * i), canary_rise=0.01) for i, params in enumerate(recipes[1:], 1)]
    rows += [run_row(recipes[0], curve_to(0.10), seed=seed, canary_rise=0.05) for seed in (42, 43, 44)]
    rows += [run_row(recipes[1], curve_to(0.31), seed=seed, canary_rise=0.01) for seed in (43, 44)]
    table = make_table(rows, points=[recipes[0]])
    truth = ground_truth(table)
    assert truth.target == recipe_id(recipes[1]) and not truth.feasible(recipe_id(recipes[0]))
    for seed in range(5):
        outcome = replay(table, truth, SearcherSpec.parse(name), seed, settings(table, num_samples=len(recipes)))
        assert outcome.chosen != recipe_id(recipes[0]) and outcome.race.winner != recipe_id(recipes[0])
        # ASHA may stop every trial after the first (its rung is set by the best curve);
        # without it, a feasible trial always finishes.
        assert (outcome.chosen is None and "asha" in name) or truth.feasible(outcome.chosen)


def test_racing_rejects_a_winner_whose_canary_only_kept_the_budget_on_the_sweeps_seed():
    recipes = grid()[:3]
    rows = [run_row(recipes[0], curve_to(0.10), canary_rise=0.0)]  # the sweep's seed: fine
    rows += [run_row(recipes[0], curve_to(0.10), seed=seed, canary_rise=0.06) for seed in (43, 44)]  # mean rise 0.04
    rows += [run_row(params, curve_to(0.20), seed=seed, canary_rise=0.01) for params in recipes[1:] for seed in (42, 43, 44)]
    table = make_table(rows)
    truth = ground_truth(table)
    assert not truth.feasible(recipe_id(recipes[0]))
    trials = replay_search(table, InOrder(table, [recipe_id(p) for p in recipes]), num_samples=3)
    assert choose_single_seed(trials, table.canary_budget) == recipe_id(recipes[0])
    assert race(trials, table, finalists=3, seeds=2).winner == recipe_id(recipes[1])


def test_tpe_starts_from_the_sweeps_point_snapped_to_the_grid_and_is_reproducible():
    table = synthetic_table(0, learning_rates=4)
    truth = ground_truth(table)
    point = dict(table.meta["points_to_evaluate"][0])  # learning_rate 1e-3: between grid values 6.46e-4 and 1.39e-3
    assert point["learning_rate"] not in set(table.rows["learning_rate"])
    search = lambda seed: TpeSearch(table.search, [point], seed=seed, startup=2)  # noqa: E731
    first = replay_search(table, search(0), num_samples=8)
    assert first[0].recipe == table.recipe_for({**point, "learning_rate": 1.39e-3})  # nearer in log space
    assert replay_search(table, search(0), num_samples=8) == first
    assert replay_search(table, search(1), num_samples=8) != first
    spec = SearcherSpec.parse("tpe+asha")
    assert replay(table, truth, spec, 3, settings(table, 8)) == replay(table, truth, spec, 3, settings(table, 8))


def test_tpe_is_told_stopped_trials_as_complete_or_pruned_and_the_canary_as_a_constraint():
    from optuna.trial import TrialState

    table = synthetic_table(0, learning_rates=4)
    point = table.meta["points_to_evaluate"][0]
    told = {}
    for stopped in ("complete", "pruned"):
        searcher = TpeSearch(table.search, [point], seed=0, startup=2, stopped=stopped, canary_budget=0.02)
        trials = replay_search(table, searcher, num_samples=12, rungs=AshaRungs(4, 2, 2))
        assert any(t.status == STOPPED for t in trials)
        for trial, frozen in zip(trials, searcher.study.trials):
            if trial.status == STOPPED:
                expected = TrialState.PRUNED if stopped == "pruned" else TrialState.COMPLETE
                assert frozen.state == expected and frozen.constraints == {}
                assert frozen.intermediate_values == dict(enumerate(trial.reports, start=1))
                if stopped == "complete":
                    assert frozen.value == trial.dev_wer  # the partial WER, as Ray's OptunaSearch tells it
            else:
                assert frozen.state == TrialState.COMPLETE and frozen.value == trial.dev_wer
                assert frozen.constraints == {"canary": pytest.approx(trial.canary_rise - 0.02)}
        told[stopped] = trials
    assert told["complete"][0] == told["pruned"][0]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_dedup_never_trains_a_recipe_twice_and_tells_a_repeat_the_earlier_outcome(sampler):
    """9 recipes, 8 trials: without +dedup both samplers train some recipe twice; with it each
    trial trains a new recipe, and every repeated proposal is in the study with the outcome
    (state, value, reports, canary constraint) of the trial that trained its recipe."""
    table = one_good_among(9, canary_rise=0.01)
    point = table.params(table.recipes[4])

    def searcher(seed, recipe_of=None):
        if sampler == "random":
            return RandomSearch(table.search, [point], seed, recipe_of=recipe_of)
        return TpeSearch(table.search, [point], seed, startup=2, stopped="pruned", canary_budget=0.02, recipe_of=recipe_of)

    repeated = told_again = 0
    for seed in range(5):
        plain = [t.recipe for t in replay_search(table, searcher(seed), num_samples=8, rungs=AshaRungs(4, 2, 2))]
        repeated += len(set(plain)) < len(plain)
        search = searcher(seed, table.recipe_for)
        trials = replay_search(table, search, num_samples=8, rungs=AshaRungs(4, 2, 2))
        assert len({t.recipe for t in trials}) == 8 and trials[0].recipe == table.recipes[4]
        trained = {}
        for frozen in search.study.trials:
            recipe = table.recipe_for(frozen.params)
            outcome = (frozen.state, frozen.value, frozen.intermediate_values, frozen.constraints)
            assert trained.setdefault(recipe, outcome) == outcome
        assert len(trained) == 8
        told_again += len(search.study.trials) - 8
    assert repeated >= 3 and told_again >= 3


def test_a_range_snaps_to_the_nearest_grid_value_in_log_space():
    table = make_table([run_row(params, curve_to(0.3)) for params in grid(learning_rates=(1e-4, 1e-3))])
    assert table.recipe_for({"learning_rate": 4e-4, "target_modules": "qv"}) == recipe_id({"learning_rate": 1e-3, "target_modules": "qv"})
    assert table.recipe_for({"learning_rate": 2.9e-4, "target_modules": "qv"}) == recipe_id({"learning_rate": 1e-4, "target_modules": "qv"})
    with pytest.raises(TableError, match="not in the table"):
        table.recipe_for({"learning_rate": 1e-3, "target_modules": "qkvo+fc"})


@pytest.mark.parametrize("name", ["random", "tpe+asha"])
def test_searchers_search_only_the_choices_the_table_holds(name):
    """A table built with --grid may leave out some of the sweep's choices: the replay's space
    narrows to those it holds, so no searcher proposes a recipe the table lacks."""
    table = make_table([run_row(params, curve_to(0.3 + 0.01 * i)) for i, params in enumerate(grid(modules=("qv", "fc")))])
    assert table.meta["search"]["target_modules"]["choices"] == ["qv", "qkvo", "fc"]
    assert table.search["target_modules"]["choices"] == ["qv", "fc"]
    assert table.search["learning_rate"] == table.meta["search"]["learning_rate"]
    truth = ground_truth(table)
    for seed in range(10):
        replay(table, truth, SearcherSpec.parse(name), seed, settings(table, 8))  # raised TableError on "qkvo" before


def test_a_failed_trial_costs_its_steps_and_is_never_chosen():
    recipes = grid()[:2]
    failed = run_row(recipes[0], [0.5, 0.4], completed=False)
    table = make_table([failed, run_row(recipes[1], curve_to(0.3))])
    trial = run_trial(0, table.sweep_run(recipe_id(recipes[0])), rungs=None)
    assert trial.status == "failed" and trial.steps == 100
    trials = replay_search(table, InOrder(table, [recipe_id(p) for p in recipes]), num_samples=2)
    assert choose_single_seed(trials, 0.02) == recipe_id(recipes[1])
    assert recipe_id(recipes[0]) not in ground_truth(table).recipes.index


def test_quantiles_are_infinite_only_when_more_than_half_never_reach():
    assert quantiles([100, 200, math.inf, math.inf])["median"] == 200
    assert quantiles([100, 200, math.inf, math.inf, math.inf])["median"] == math.inf
    assert quantiles([100, 200, 300, 400])["q25"] == 100


def test_table_round_trips_with_its_metadata(tmp_path):
    table = synthetic_table(1, learning_rates=3)
    path = write_search_table(table.rows, {**table.meta, "commit": "abc"}, tmp_path / "t.parquet")
    again = read_search_table(path)
    assert again.meta["commit"] == "abc" and again.recipes == table.recipes
    assert again.sweep_run(table.recipes[0]) == table.sweep_run(table.recipes[0])
    with pytest.raises(TableError, match="dev_wer_curve"):
        write_search_table(table.rows.drop(columns="dev_wer_curve"), table.meta, tmp_path / "bad.parquet")


def test_cli_prints_every_searcher_and_writes_json(tmp_path):
    table = synthetic_table(2, learning_rates=3, extra_seed_recipes=8)
    path = write_search_table(table.rows, table.meta, tmp_path / "table.parquet")
    out = tmp_path / "out.json"
    from benchmarks.search.__main__ import main

    assert main(["--table", str(path), "--replays", "3", "--num-samples", "6", "12", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [b["num_samples"] for b in report["budgets"]] == [6, 12]
    rows = report["budgets"][0]["searchers"]
    assert [r["searcher"] for r in rows] == [n + s for n in ALL_SEARCHERS for s in ("", " +race")]
    for row in rows:
        assert row["bound"] == row["searcher"].startswith("oracle") and not (row["bound"] and row["meets_goals"])
        assert 0 <= row["chosen_feasible"] <= 1 and set(row["reach_steps"]) == {"median", "q25", "q75"}
        assert len(row["reach_steps_each"]) == 3 and len(row["reach_vs_random_ci"]) == 2
    assert report["facts"]["recipes"] == len(table.recipes)
    assert main(["--table", str(tmp_path / "missing.parquet")]) == 2
    assert main(["--table", str(path), "--searchers", "random+pruned"]) == 2
    for bad in (["--replays", "0"], ["--num-samples", "6", "0"], ["--race-seeds", "-1"], ["--finalists", "-2"],
                ["--reduction-factor", "1"], ["--within", "nan"]):
        assert main(["--table", str(path), *bad]) == 2, bad


def test_the_reach_ratio_interval_is_exact_for_constant_replays_and_covers_the_median_ratio():
    assert ratio_interval([500.0] * 50, [1000.0] * 50) == [0.5, 0.5]
    rng = np.random.default_rng(0)
    steps, reference = list(rng.integers(5, 15, 200) * 100.0), list(rng.integers(10, 30, 200) * 100.0)
    low, high = ratio_interval(steps, reference)
    point = quantiles(steps)["median"] / quantiles(reference)["median"]
    assert low < point < high and high - low < 0.5
    # Fewer replays, a wider interval.
    few_low, few_high = ratio_interval(steps[:20], reference[:20])
    assert few_high - few_low > high - low
    # Random search that mostly never reaches: no finite ratio to bound.
    assert all(math.isnan(x) for x in ratio_interval([100.0] * 10, [math.inf] * 8 + [100.0] * 2))


def test_racing_follows_the_tables_sweep_unless_the_command_line_says_otherwise():
    from benchmarks.search.__main__ import build_parser, racing_for

    parse = build_parser().parse_args
    assert racing_for({"racing": {"finalists": 2, "seeds": 1}}, parse([])) == {"finalists": 2, "seeds": 1}
    assert racing_for({"racing": {"finalists": 2, "seeds": 1}}, parse(["--finalists", "4"])) == {"finalists": 4, "seeds": 1}
    assert racing_for({}, parse(["--race-seeds", "3"])) == {"finalists": 3, "seeds": 3}  # a table from before racing was recorded


def test_the_demo_table_replays_the_demo_sweeps_asha_and_startup_and_another_table_its_own(tmp_path):
    """The default replay is the sweep a user runs (demo.yaml), not the one that built the
    table; --sweep names another, flags override either."""
    from benchmarks.search.__main__ import DEFAULT_SWEEP, DEFAULT_TABLE, build_parser, replayed_sweep, settings_for
    from sweeps.search.config import load_sweep_config

    demo = load_sweep_config(DEFAULT_SWEEP)
    meta = {"scheduler": {"type": "asha", "grace_period": 3, "reduction_factor": 3}, "racing": {"finalists": 4, "seeds": 1},
            "points_to_evaluate": [], "max_reports": 8}
    parse = build_parser().parse_args
    sweep = replayed_sweep(meta, parse(["--table", str(DEFAULT_TABLE)]))
    settings = settings_for(meta, sweep, parse([]), 16, {"finalists": 2, "seeds": 2})
    assert (settings.grace_period, settings.reduction_factor) == (demo.scheduler.grace_period, demo.scheduler.reduction_factor)
    assert settings.startup_trials == demo.startup_trials and sweep["racing"] == demo.racing.to_dict()
    other = replayed_sweep(meta, parse(["--table", str(tmp_path / "other.parquet")]))
    settings = settings_for(meta, other, parse(["--startup-trials", "4"]), 16, {"finalists": 4, "seeds": 1})
    assert (settings.grace_period, settings.reduction_factor, settings.startup_trials) == (3, 3.0, 4)


def test_help_imports_neither_optuna_nor_torch_nor_ray():
    code = ("import sys\nfrom benchmarks.search.__main__ import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert not {'optuna', 'torch', 'ray'} & set(sys.modules), sorted({'optuna', 'torch', 'ray'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_searcher_names_parse():
    assert SearcherSpec.parse("tpe+asha+pruned+canary") == SearcherSpec("tpe+asha+pruned+canary", "tpe", True, True, True)
    assert SearcherSpec.parse("grid+asha") == SearcherSpec("grid+asha", "grid", True, False, False)
    assert SearcherSpec.parse("oracle+asha").is_bound and not SearcherSpec.parse("tpe+asha").is_bound
    assert SearcherSpec.parse("tpe+asha+dedup").dedup and SearcherSpec.parse("random+dedup").dedup and not SearcherSpec.parse("tpe").dedup
    for bad in ("bohb", "tpe+pruned", "random+canary", "grid+asha+pruned", "tpe+asha+asha", "oracle+asha+canary", "oracle+pruned",
                "grid+dedup", "oracle+asha+dedup", "tpe+dedup+dedup"):
        with pytest.raises(ValueError):
            SearcherSpec.parse(bad)
