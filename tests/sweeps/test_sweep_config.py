"""Fast checks of the sweep YAML, its overrides and the Optuna search space (no Ray started)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from sweeps.search.space import build_search_space, with_absolute_paths
from sweeps.search.config import SweepConfig, load_sweep_config
from trainable.config_io import ConfigError, parse_override
from trainable.config import REPO_ROOT, TARGET_MODULE_SETS, TrialConfig

CONFIGS = REPO_ROOT / "sweeps" / "configs"


def sweep_dict(**changes) -> dict:
    raw = {
        "name": "unit",
        "trial": {"max_steps": 100, "eval_every": 25, "learning_rate": 1e-3, "lora_r": 8, "target_modules": "qkvo"},
        "search": {
            "learning_rate": {"low": "1e-4", "high": 1e-2, "log": True},
            "lora_r": {"choices": [4, 8, 16]},
            "lora_dropout": {"low": 0.0, "high": 0.2},
            "target_modules": {"choices": ["qv", "qkvo", "qkvo+fc"]},
        },
        "points_to_evaluate": [{}],
        "num_samples": 6,
    }
    raw.update(changes)
    return raw


def write_yaml(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_open_with_their_command(path):
    sweep = load_sweep_config(path)
    assert path.read_text().startswith("# python -m sweeps.run")
    # The hand-run recipe is evaluated first and is the `trial:` recipe itself.
    first = sweep.points_to_evaluate[0]
    assert TrialConfig.from_dict({**sweep.trial.to_dict(), **first}) == sweep.trial
    assert {"learning_rate", "lora_r", "lora_alpha", "target_modules"} <= set(sweep.searched_names)


def test_moonshine_tiny_keeps_the_old_recipe():
    trial = load_sweep_config(CONFIGS / "moonshine_tiny.yaml").trial
    assert (trial.model, trial.max_steps, trial.batch_size, trial.gradient_accumulation_steps) == ("UsefulSensors/moonshine-tiny", 1600, 1, 4)
    assert (trial.learning_rate, trial.lora_r, trial.lora_alpha, trial.lora_dropout) == (1e-5, 8, 16, 0.05)
    assert trial.target_modules == TARGET_MODULE_SETS["qkvo"]


def test_overrides_apply_with_dotted_keys_and_yaml_values(tmp_path):
    path = write_yaml(tmp_path, sweep_dict())
    sweep = load_sweep_config(path, ["num_samples=32", "trial.max_steps=800", "search.lora_r.choices=[8, 32]",
                                     "scheduler=none", "search.lora_dropout=null", "points_to_evaluate=[]"])
    assert sweep.num_samples == 32 and sweep.trial.max_steps == 800
    assert [p for p in sweep.search if p.name == "lora_r"][0].choices == (8, 32)
    assert sweep.scheduler.kind == "none"
    assert "lora_dropout" not in sweep.searched_names


def test_a_canary_budget_is_read_and_written_back(tmp_path):
    sweep = load_sweep_config(write_yaml(tmp_path, sweep_dict()), ["max_wer_increase.canary=0.02"])
    assert sweep.max_wer_increase == (("canary", 0.02),)
    assert SweepConfig.from_dict(sweep.to_dict()).max_wer_increase == (("canary", 0.02),)


def test_scheduler_override_turns_a_name_into_a_mapping(tmp_path):
    path = write_yaml(tmp_path, sweep_dict(scheduler="asha"))
    sweep = load_sweep_config(path, ["scheduler.grace_period=3"])
    assert (sweep.scheduler.kind, sweep.scheduler.grace_period) == ("asha", 3)


@pytest.mark.parametrize(
    "override, named",
    [
        ("num_sample=3", "num_sample"),
        ("trial.max_step=3", "max_step"),
        ("trial.output_dir=x", "trial.output_dir"),
        ("search.lora_rank.choices=[1]", "search.lora_rank"),
        ("search.learning_rate.low=0", "search.learning_rate.low"),
        ("search.learning_rate.lo=1", "search.learning_rate.lo"),
        ("search.lora_dropout.high=1.5", "search.lora_dropout"),
        ("search.lora_r.choices=[]", "search.lora_r.choices"),
        ("search.target_modules.choices=[[q_proj]]", "search.target_modules.choices"),
        ("num_samples=two", "num_samples"),
        ("max_concurrent_trials=0", "max_concurrent_trials"),
        ("resources_per_trial.gpu=1.5", "resources_per_trial.gpu"),
        ("resources_per_trial.tpu=1", "resources_per_trial.tpu"),
        ("scheduler.kind=asha", "scheduler.kind"),
        ("scheduler.reduction_factor=1", "scheduler.reduction_factor"),
        ("metric=heldout_tuned_wer", "metric"),
        ("points_to_evaluate=[{lora_r: 5}]", "points_to_evaluate[0].lora_r"),
        ("points_to_evaluate=[{seed: 5}]", "points_to_evaluate[0].seed"),
        ("trial.eval_every=0", "scheduler"),
        ("num_samples=0", "num_samples"),
        ("max_wer_increase.heldout=0.02", "max_wer_increase.heldout"),  # the optimised set itself
        ("max_wer_increase.kanary=0.02", "max_wer_increase.kanary"),
        ("max_wer_increase.canary=2", "max_wer_increase.canary"),  # points, not a WER fraction
        ("max_wer_increase.canary=lots", "max_wer_increase.canary"),
        ("search.learning_rate.grid=1", "search.learning_rate.grid"),
        ("search.lora_dropout.step=0.1", "search.lora_dropout"),  # with the grid below: one or the other
        ("search.lora_r={low: 4, high: 16, grid: 3}", "search.lora_r.grid"),  # an int range has step
        ("search.learning_rate.grid=4", "points_to_evaluate[0].learning_rate"),  # 1e-3 is not on 1e-4 .. 1e-2 in 4
        ("startup_trials=0", "startup_trials"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(tmp_path, override, named):
    raw = sweep_dict()
    if override.startswith("search.lora_dropout.step"):
        raw["search"]["lora_dropout"]["grid"] = 3  # 0, 0.1, 0.2: the point {} takes the trial's 0.1
        raw["trial"]["lora_dropout"] = 0.1
    path = write_yaml(tmp_path, raw)
    with pytest.raises(ConfigError) as caught:
        load_sweep_config(path, [override])
    assert named in str(caught.value)
    assert str(caught.value).startswith(f"override {override}: ")  # the YAML alone is fine: blame the override


def test_an_error_of_the_yaml_itself_names_the_file_even_with_overrides(tmp_path):
    path = write_yaml(tmp_path, sweep_dict(num_samples=0))
    with pytest.raises(ConfigError, match=rf"^{path}: num_samples"):
        load_sweep_config(path, ["trial.max_steps=50"])
    assert load_sweep_config(path, ["num_samples=3"]).num_samples == 3  # an override may mend the file


def test_a_misspelt_key_gets_the_closest_known_one():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) nums_samples \(did you mean num_samples\?\)"):
        SweepConfig.from_dict({**sweep_dict(), "nums_samples": 4})
    with pytest.raises(ConfigError, match=r"search.lora_rank: not a TrialConfig field \(did you mean lora_r\?\)"):
        SweepConfig.from_dict(sweep_dict(search={"lora_rank": [4]}))


@pytest.mark.parametrize("text", ["num_samples", "=3", "trial..max_steps=3"])
def test_malformed_overrides_are_rejected(text):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override(text)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_sweep_config(path)


def test_points_are_completed_from_the_trial_recipe(tmp_path):
    sweep = load_sweep_config(write_yaml(tmp_path, sweep_dict(points_to_evaluate=[{}, {"lora_r": 16}])))
    assert sweep.points_to_evaluate[0] == {"learning_rate": 1e-3, "lora_r": 8, "lora_dropout": 0.05, "target_modules": "qkvo"}
    assert sweep.points_to_evaluate[1]["lora_r"] == 16 and sweep.points_to_evaluate[1]["learning_rate"] == 1e-3


def test_sweep_round_trips_through_its_saved_form(tmp_path):
    sweep = load_sweep_config(write_yaml(tmp_path, sweep_dict()), ["seed=7"])
    again = SweepConfig.from_dict(yaml.safe_load(yaml.safe_dump(sweep.to_dict())))
    assert again == sweep


def test_asha_max_t_counts_the_core_reports():
    # Reports at steps 25, 50, 75 (below max_steps) and the final one.
    assert SweepConfig.from_dict(sweep_dict()).max_reports == 4


def suggestions(sweep: SweepConfig, seed: int, count: int) -> list[dict]:
    """Ask Optuna's seeded TPE for ``count`` configs through the sweep's define-by-run space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = build_search_space(sweep)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    for point in sweep.points_to_evaluate:
        study.enqueue_trial(point)
    configs = []
    for _ in range(count):
        trial = study.ask()
        constants = space(trial)
        configs.append({**trial.params, **constants})
        study.tell(trial, 0.5)
    return configs


def test_search_space_suggests_in_range_and_returns_the_fixed_recipe():
    sweep = SweepConfig.from_dict(sweep_dict())
    configs = suggestions(sweep, seed=0, count=6)
    assert configs[0]["lora_r"] == 8 and configs[0]["learning_rate"] == 1e-3  # the hand-run point first
    for config in configs:
        assert 1e-4 <= config["learning_rate"] <= 1e-2
        assert config["lora_r"] in (4, 8, 16) and 0.0 <= config["lora_dropout"] <= 0.2
        assert config["target_modules"] in TARGET_MODULE_SETS
        assert config["max_steps"] == 100 and "output_dir" not in config and "num_threads" not in config
        # Each suggestion plus constants is a whole recipe.
        TrialConfig.from_dict({**config, "output_dir": "x"})


def test_search_space_is_reproducible_per_seed():
    sweep = SweepConfig.from_dict(sweep_dict(points_to_evaluate=[]))
    assert suggestions(sweep, 3, 5) == suggestions(sweep, 3, 5)
    assert suggestions(sweep, 3, 5) != suggestions(sweep, 4, 5)


def test_search_space_pickles_for_tune_restore():
    space = build_search_space(SweepConfig.from_dict(sweep_dict()))
    assert pickle.loads(pickle.dumps(space)) == space


def test_searcher_is_seeded_and_enqueues_points():
    pytest.importorskip("ray")
    from sweeps.search.space import build_searcher

    def first_three(seed: int) -> list[dict]:
        sweep = SweepConfig.from_dict(sweep_dict(seed=seed))
        searcher = build_searcher(sweep, build_search_space(sweep))
        return [searcher.suggest(f"t{i}") for i in range(3)]

    same, again, other = first_three(11), first_three(11), first_three(12)
    assert same[0]["lora_r"] == 8 and same[0]["learning_rate"] == 1e-3 and same[0]["max_steps"] == 100
    assert same == again and same[1:] != other[1:]


def test_relative_path_choices_become_absolute_for_trials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = sweep_dict(search={"train_manifest": {"choices": ["a/train.jsonl", str(tmp_path / "b.jsonl")]}},
                     points_to_evaluate=[{"train_manifest": "a/train.jsonl"}])
    sweep = with_absolute_paths(SweepConfig.from_dict(raw))
    assert sweep.search[0].choices == (str(tmp_path / "a" / "train.jsonl"), str(tmp_path / "b.jsonl"))
    assert sweep.points_to_evaluate == ({"train_manifest": str(tmp_path / "a" / "train.jsonl")},)


def test_a_grid_range_trains_evenly_spread_values_and_optuna_models_the_range():
    """``grid: 4`` on 5e-4 .. 4e-3 (log) trains 5e-4, 1e-3, 2e-3, 4e-3, whatever Optuna samples
    between them; the study keeps the sample, the trial's config the grid value."""
    sweep = SweepConfig.from_dict(sweep_dict(
        search={"learning_rate": {"low": 5e-4, "high": 4e-3, "log": True, "grid": 4}, "lora_dropout": {"low": 0.0, "high": 0.2, "grid": 3}},
        points_to_evaluate=[{"learning_rate": 1e-3, "lora_dropout": 0.1}]))
    lr, dropout = sweep.search
    assert lr.grid_values() == (5e-4, 1e-3, 2e-3, 4e-3) and dropout.grid_values() == (0.0, 0.1, 0.2)
    assert lr.trained(1.4e-3) == 1e-3 and lr.trained(1.42e-3) == 2e-3  # nearest in log space: the midpoint is 1.414e-3
    assert dropout.trained(0.149) == 0.1 and dropout.trained(0.151) == 0.2
    assert SweepConfig.from_dict(sweep.to_dict()) == sweep
    configs = suggestions(sweep, seed=3, count=12)
    assert {c["learning_rate"] for c in configs} <= set(lr.grid_values()) and len({c["learning_rate"] for c in configs}) > 1
    assert {c["lora_dropout"] for c in configs} <= {0.0, 0.1, 0.2}


def test_startup_trials_set_tpes_random_trials_else_the_rule():
    from sweeps.search.space import build_searcher

    sweep = SweepConfig.from_dict(sweep_dict(num_samples=16))
    assert build_searcher(sweep, build_search_space(sweep))._sampler._n_startup_trials == 5
    sweep = SweepConfig.from_dict(sweep_dict(num_samples=16, startup_trials=2))
    assert build_searcher(sweep, build_search_space(sweep))._sampler._n_startup_trials == 2
    assert SweepConfig.from_dict(sweep.to_dict()).startup_trials == 2
