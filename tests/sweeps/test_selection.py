"""How repro reads a sweep's choice (best.json) and picks what it confirms on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeps.repro import ReproError
from sweeps.repro.selection import (
    EvalSet, SweepChoice, confirmation_config, default_seeds, read_recipe_file, read_sweep_choice, selection_bias,
)
from trainable.config import TrialConfig

RECIPE = TrialConfig(eval_manifests=(("dev", "data/dev.jsonl"), ("canary", "data/canary.jsonl")))


def best_json(tmp_path: Path, **keys) -> Path:
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"config": RECIPE.to_dict(), **keys}))
    return path


def test_best_json_with_select_and_confirm_sets(tmp_path):
    path = best_json(tmp_path, select_on="dev", confirm_on={"name": "test", "path": "data/test.jsonl"},
                     max_wer_increase={"canary": 0.02}, selection_seeds=[42, 1042, 2042])
    choice = read_sweep_choice(read_recipe_file(path), RECIPE)
    assert choice == SweepChoice(EvalSet("dev", str(Path("data/dev.jsonl").absolute())), EvalSet("test", "data/test.jsonl"),
                                 {"canary": 0.02}, (42, 1042, 2042))
    config = confirmation_config(RECIPE, choice, choice.confirm_on)
    assert config.eval_manifests == (("test", "data/test.jsonl"), ("canary", "data/canary.jsonl"))


def test_an_older_best_json_selects_on_the_recipes_first_eval_set(tmp_path):
    choice = read_sweep_choice(read_recipe_file(best_json(tmp_path, sweep="demo", eval_wer=0.1)), RECIPE)
    assert choice.selected_on.name == "dev" and choice.confirm_on is None and choice.selection_seeds == ()
    assert confirmation_config(RECIPE, choice, None) == RECIPE


def test_a_plain_recipe_or_a_runs_summary_knows_no_select_set(tmp_path):
    plain = tmp_path / "recipe.json"
    RECIPE.to_json(plain)
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"config": RECIPE.to_dict(), "evals": {}}))
    for path in (plain, summary):
        assert read_sweep_choice(read_recipe_file(path), RECIPE) == SweepChoice()
    config = confirmation_config(RECIPE, SweepChoice(), EvalSet("test", "t.jsonl"))
    assert config.eval_manifests == (("test", "t.jsonl"), ("canary", "data/canary.jsonl"))  # in place of the first set


@pytest.mark.parametrize("keys, message", [
    ({"select_on": "heldout"}, "select_on: 'heldout' is not one of the recipe's eval sets (dev, canary)"),
    ({"confirm_on": "test"}, "confirm_on: expected {\"name\": NAME, \"path\": PATH} or null, got 'test'"),
    ({"selection_seeds": [42, "x"]}, "selection_seeds: expected a list of integers"),
    ({"max_wer_increase": {"canary": -0.1}}, "max_wer_increase.canary: a WER increase between 0 and 1"),
])
def test_a_malformed_best_json_is_refused_naming_file_and_key(tmp_path, keys, message):
    path = best_json(tmp_path, sweep="demo", **keys)
    with pytest.raises(ReproError) as caught:
        read_sweep_choice(read_recipe_file(path), RECIPE)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_selection_bias_by_name_or_by_manifest_file(tmp_path):
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text("")
    selected = EvalSet("dev", str(manifest))
    assert selection_bias(EvalSet("dev", None), selected) is True
    assert selection_bias(EvalSet("heldout", str(tmp_path / "." / "dev.jsonl")), selected) is True
    assert selection_bias(EvalSet("test", str(tmp_path / "test.jsonl")), selected) is False
    assert selection_bias(EvalSet("test", None), selected) is False
    assert selection_bias(EvalSet("dev", str(manifest)), None) is None


def test_default_seeds_skip_the_selection_seeds():
    assert default_seeds(42, 3, ()) == [43, 44, 45]
    assert default_seeds(42, 3, (42, 43, 44, 1042)) == [45, 46, 47]
