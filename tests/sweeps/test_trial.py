"""The Ray Tune glue without a Ray cluster: config mapping, reports, failure messages."""

from __future__ import annotations

import json
from contextlib import nullcontext

import numpy as np
import pytest

from trainable.config import TARGET_MODULE_SETS, ConfigError, TrialConfig
from trainable.manifest import ManifestError
from sweeps.search.trial import TrialFailed, TuneReporter, _report_if_finished, describe_failure, trial_config_from_tune


def tune_config(**changes) -> dict:
    """What a sweep trial receives: the fixed recipe plus Optuna's values (numpy, set names)."""
    recipe = {key: value for key, value in TrialConfig().to_dict().items() if key not in ("output_dir", "num_threads")}
    return {**recipe, "learning_rate": np.float64(2e-3), "lora_r": np.int64(16), "target_modules": "qkvo+fc", **changes}


def test_tune_config_becomes_the_trial_recipe(tmp_path):
    config = trial_config_from_tune(tune_config(), output_dir=tmp_path / "run", cpus=2)
    assert config.learning_rate == 2e-3 and type(config.lora_r) is int and config.lora_r == 16
    assert config.target_modules == TARGET_MODULE_SETS["qkvo+fc"]
    assert (config.output_dir, config.num_threads) == (str(tmp_path / "run"), 2)


def test_unknown_tune_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="lora_rank"):
        trial_config_from_tune(tune_config(lora_rank=4), output_dir=tmp_path, cpus=1)


def test_reporter_forwards_metrics_and_checkpoint(monkeypatch, tmp_path):
    from ray import tune

    sent = []
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: sent.append((metrics, checkpoint)))
    reporter = TuneReporter({"node": "host-a", "num_threads": 1})
    reporter({"step": 50, "eval_wer": 0.4, "train_loss": 1.0}, str(tmp_path))
    reporter({"step": 100, "eval_wer": 0.3, "done": True}, None)

    (middle, checkpoint), (final, no_checkpoint) = sent
    assert middle == {"step": 50, "eval_wer": 0.4, "train_loss": 1.0, "completed": False, "node": "host-a", "num_threads": 1}
    assert checkpoint.path == str(tmp_path) and no_checkpoint is None
    # Tune reserves "done"; the final report is marked "completed" instead.
    assert "done" not in final and final["completed"] is True and reporter.last_step == 100


def test_failure_message_is_one_line_with_recipe_node_and_hint():
    recipe = TrialConfig(learning_rate=3e-3, lora_r=4)
    error = ManifestError("train.jsonl: 1 bad row(s)\n  train.jsonl:1: unreadable or corrupt audio a.wav")
    message = describe_failure(error, recipe, step=0, node={"node": "host-b"}, trial_id="abc")
    assert "\n" not in message
    assert message.startswith("trial abc failed before the first report on host-b: ManifestError: train.jsonl: 1 bad row(s) | ")
    assert "corrupt audio a.wav" in message and "learning_rate=0.003" in message and "lora_r=4" in message
    assert "on_bad_row=skip" in message
    assert "at step 150 of 300" in describe_failure(FloatingPointError("loss is nan"), recipe, 150, {}, "abc")


def test_finished_trial_reports_its_summary_instead_of_training(monkeypatch, tmp_path):
    sent = []
    reporter = TuneReporter({})
    monkeypatch.setattr(TuneReporter, "__call__", lambda self, metrics, checkpoint_dir: sent.append(metrics))
    recipe = TrialConfig(output_dir=str(tmp_path))
    assert not _report_if_finished(recipe, reporter)

    summary = {"evals": {"heldout": {"baseline": {"wer": 0.5, "orthographic_wer": 0.6, "cer": 0.3},
                                     "tuned": {"wer": 0.3, "orthographic_wer": 0.4, "cer": 0.2}}},
               "primary_eval": "heldout", "steps": 300, "train_seconds": 10.0, "elapsed_seconds": 12.0,
               "steps_per_second": 30.0, "nonfinite_steps": 0}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert _report_if_finished(recipe, reporter)
    assert sent[0]["eval_wer"] == 0.3 and sent[0]["baseline_wer"] == 0.5 and sent[0]["done"] and sent[0]["step"] == 300


class FakeContext:
    """What ``tune.get_context()`` gives a trial, without Ray: no storage (the trial works in
    its current folder), no resources."""

    def get_storage(self):
        return None

    def get_trial_id(self):
        return "0d624c38"

    def get_trial_resources(self):
        raise RuntimeError("outside a trial")


def failing_attempt(monkeypatch, tmp_path, checkpoint_step: int | None) -> str:
    """Run ``train_trial`` (Ray and training faked) restored from a checkpoint saved at
    ``checkpoint_step`` (None: a first attempt), where training diverges at step 39; the message."""
    from ray import tune

    import sweeps.search.trial as trial
    from trainable.train import NonFiniteLossError, TrainState

    checkpoint = None
    if checkpoint_step is not None:  # as trainable.train.save_checkpoint leaves it
        (tmp_path / "checkpoint").mkdir()
        (tmp_path / "checkpoint" / "train_state.json").write_text(json.dumps(TrainState(step=checkpoint_step).__dict__))
        checkpoint = tune.Checkpoint.from_directory(str(tmp_path / "checkpoint"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tune, "get_context", lambda: FakeContext())
    monkeypatch.setattr(tune, "get_checkpoint", lambda: checkpoint)
    monkeypatch.setattr(trial, "TrialGauges", lambda *args: nullcontext())
    monkeypatch.setattr(trial, "check_data_on_node", lambda recipe: None)
    resumed_from = []

    def diverge(recipe, reporter, resume_from):
        resumed_from.append(resume_from)
        raise NonFiniteLossError("losses were non-finite for 20 steps in a row at step 39")

    monkeypatch.setattr(trial, "_run", diverge)
    with pytest.raises(TrialFailed) as failed:
        trial.train_trial(tune_config(max_steps=40, eval_every=20))
    assert resumed_from == [str(tmp_path / "checkpoint") if checkpoint else None]
    return str(failed.value)


def test_a_retry_restored_from_its_checkpoint_fails_at_the_checkpoint_step_not_before_the_first_report(monkeypatch, tmp_path):
    """A trial that reported at step 20, crashed, and was retried from that checkpoint by
    Tune (max_failures) or --resume, then failed again before its next report."""
    message = failing_attempt(monkeypatch, tmp_path, checkpoint_step=20)
    assert message.startswith("trial 0d624c38 failed at step 20 of 40 on ")
    assert "NonFiniteLossError: losses were non-finite for 20 steps in a row at step 39" in message


def test_a_first_attempt_fails_before_the_first_report(monkeypatch, tmp_path):
    assert "failed before the first report on " in failing_attempt(monkeypatch, tmp_path, checkpoint_step=None)


def test_checkpoint_step_reads_the_checkpoints_train_state(tmp_path):
    from trainable.train import checkpoint_step

    assert checkpoint_step(None) == 0
    assert checkpoint_step(str(tmp_path)) == 0  # no train state: nothing known, as for a first attempt
    (tmp_path / "train_state.json").write_text(json.dumps({"step": 20, "epoch": 0}))
    assert checkpoint_step(str(tmp_path)) == 20


def test_a_resumed_trial_reports_again_only_the_complete_checkpoints_ray_missed(tmp_path):
    """Checkpoints after the one Ray restores from are taken up to the first one not complete
    (a copy cut short, or one written before listings were kept): Ray writes N + 1 after N."""
    from sweeps.search.checkpoints import FILE_SIZES, mark_complete, saved_report, unregistered_checkpoints

    folders = [tmp_path / f"checkpoint_{index:06d}" for index in range(4)]
    for index, folder in enumerate(folders):
        folder.mkdir()
        (folder / "training_state.pt").write_bytes(bytes(1000))
        mark_complete(folder, {"step": 2 * (index + 1), "eval_wer": 0.5})
    (folders[2] / "training_state.pt").write_bytes(bytes(400))  # the copy was cut here

    assert unregistered_checkpoints(tmp_path, None) == folders[:2]  # Ray knows none: from step 0 it would start
    assert unregistered_checkpoints(tmp_path, str(folders[0])) == folders[1:2]
    assert unregistered_checkpoints(tmp_path, str(folders[1])) == []  # not 3: it follows an incomplete one
    assert saved_report(folders[1]) == {"step": 4, "eval_wer": 0.5}
    (folders[1] / FILE_SIZES).unlink()
    assert unregistered_checkpoints(tmp_path, None) == folders[:1]
