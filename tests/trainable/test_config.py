"""The recipe object: validation names the field, and it round-trips through JSON."""

from __future__ import annotations

import pytest

from trainable.config import ConfigError, TrialConfig


def test_round_trip_through_json(tmp_path):
    config = TrialConfig(lora_r=4, target_modules="qv", eval_manifests=(("a", "a.jsonl"), ("b", "b.jsonl")), seed=7)
    config.to_json(tmp_path / "c.json")
    assert TrialConfig.from_file(tmp_path / "c.json") == config
    assert config.primary_eval == "a"


def test_values_from_yaml_or_tune_are_coerced():
    config = TrialConfig.from_dict({"lora_r": "16", "learning_rate": "3e-4", "allow_overlap": "true",
                                    "target_modules": "qkvo+fc", "eval_manifests": ["x=x.jsonl"]})
    assert config.lora_r == 16 and config.learning_rate == 3e-4 and config.allow_overlap is True
    assert config.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")
    assert config.eval_manifests == (("x", "x.jsonl"),)


@pytest.mark.parametrize(
    "changes, field",
    [({"lora_r": 0}, "lora_r"), ({"lora_dropout": 1.5}, "lora_dropout"), ({"device": "tpu"}, "device"),
     ({"learning_rate": 0}, "learning_rate"), ({"eval_manifests": ()}, "eval_manifests"),
     ({"lr_scheduler": "step"}, "lr_scheduler"), ({"target_modules": ""}, "target_modules"),
     ({"seed": -1}, "seed: must be >= 0"), ({"seed": 2**64}, "seed: must be at most"),
     ({"weight_decay": -5}, "weight_decay: must be >= 0"), ({"num_threads": -2}, "num_threads: must be >= 1"),
     ({"num_threads": 0}, "num_threads: must be >= 1"), ({"warmup_steps": -1}, "warmup_steps: must be >= 0"),
     ({"eval_every": -1}, "eval_every: must be >= 0"), ({"max_grad_norm": -1.0}, "max_grad_norm: must be >= 0"),
     ({"learning_rate": float("inf")}, "learning_rate: expected a finite number"),
     ({"max_duration": float("nan")}, "max_duration: expected a finite number"),
     ({"lora_r": 4.9}, "lora_r: expected int"), ({"model": " "}, "model: empty")],
)
def test_bad_values_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        TrialConfig(**changes)


def test_unknown_and_mistyped_fields_are_named():
    with pytest.raises(ConfigError, match="lora_rank"):
        TrialConfig.from_dict({"lora_rank": 8})
    with pytest.raises(ConfigError, match="max_steps: expected int"):
        TrialConfig.from_dict({"max_steps": "lots"})


def test_resolved_makes_paths_absolute_and_keeps_hub_ids(tmp_path):
    (tmp_path / "m.jsonl").write_text("")
    config = TrialConfig(model="UsefulSensors/moonshine-tiny", train_manifest="m.jsonl",
                         eval_manifests=(("h", "m.jsonl"),), output_dir="out").resolved(tmp_path)
    assert config.model == "UsefulSensors/moonshine-tiny"
    assert config.train_manifest == str(tmp_path / "m.jsonl")
    assert config.output_dir == str(tmp_path / "out")


def test_adapter_scope_is_checked_and_travels_through_json(tmp_path):
    with pytest.raises(ConfigError, match="adapter_scope"):
        TrialConfig(adapter_scope="middle")
    TrialConfig(adapter_scope="decoder").to_json(tmp_path / "recipe.json")
    assert TrialConfig.from_file(tmp_path / "recipe.json").adapter_scope == "decoder"
    assert TrialConfig.from_dict({}).adapter_scope == "all"  # recipes written before the field still load


def test_numbers_are_checked_however_the_config_is_built():
    """In code, by replace() or from a file: the same rules, and integers stay exact."""
    with pytest.raises(ConfigError, match="weight_decay"):
        TrialConfig().replace(weight_decay=-1.0)
    assert TrialConfig(num_threads=2.0).num_threads == 2 and isinstance(TrialConfig(num_threads=2.0).num_threads, int)
    assert TrialConfig.from_dict({"seed": str(2**53 + 1)}).seed == 2**53 + 1
