"""Bad input across the three command lines: exit code 2, one message naming the field,
flag or file:line, and no traceback. Each case also says how far the command may get:
``flags`` cases stop before any model loads or Ray starts, ``model`` cases before any
audio is decoded, ``data`` cases before training starts.

The table runs each command's ``main`` in this process (seconds in all); a few cases run
as real ``python -m`` processes too, for the exit status the shell sees.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import write_manifest, write_tone

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    cli: str  # run (trainable.run), sweep (sweeps.run) or repro (sweeps.repro)
    argv: str  # shell words; {name} is replaced by a path from the ``inputs`` fixture
    names: tuple[str, ...]  # what the message must name: the field, flag or file:line
    code: int = 2
    # How far it may get: flags (nothing loaded), modules (the model's module tree on the meta
    # device, no weights), model (loaded, no audio decoded), data (decoded, not trained).
    stage: str = "flags"
    files: dict[str, str] = field(default_factory=dict)  # files to create in the working folder first


RUN_DATA = "--model {model} --eval-manifest heldout={heldout} --device cpu --max-steps 1 --batch-size 4 --output-dir {tmp}/out"
REPRO = "--config {recipe_json} --trials 1 --determinism-reruns 0"
NO_SEARCH = "search= points_to_evaluate=[] max_wer_increase="

CASES = {
    # ---------------------------------------------------------------- python -m trainable.run
    "run: --config missing": Case("run", "--config {tmp}/nope.json", ("nope.json: no such file",)),
    "run: --config bad JSON": Case("run", "--config {bad_json}", ("bad.json:1: not valid JSON",)),
    "run: --config not a mapping": Case("run", "--config {list_json}", ("list.json: expected a mapping",)),
    "run: --config unknown field": Case("run", "--config {unknown_json}", ("lora_rank",)),
    "run: --log-level chatty": Case("run", "--log-level chatty", ("--log-level", "chatty")),
    "run: --num-threads -2": Case("run", "--num-threads -2", ("num_threads: must be >= 1",)),
    "run: --num-threads 1.5": Case("run", "--num-threads 1.5", ("num_threads: expected int",)),
    "run: --seed -1": Case("run", "--seed -1", ("seed: must be >= 0",)),
    "run: --seed too large": Case("run", f"--seed {2**64}", ("seed: must be at most",)),
    "run: --weight-decay=-5": Case("run", "--weight-decay=-5", ("weight_decay: must be >= 0",)),
    "run: --learning-rate inf": Case("run", "--learning-rate inf", ("learning_rate: expected a finite number",)),
    "run: --learning-rate 0": Case("run", "--learning-rate 0", ("learning_rate: must be > 0",)),
    "run: --max-steps 2.7": Case("run", "--max-steps 2.7", ("max_steps: expected int",)),
    "run: --max-steps abc": Case("run", "--max-steps abc", ("max_steps: expected int",)),
    "run: --lora-r 4.9": Case("run", "--lora-r 4.9", ("lora_r: expected int",)),
    "run: --lora-alpha 0": Case("run", "--lora-alpha 0", ("lora_alpha: must be >= 1",)),
    "run: --lora-dropout 1": Case("run", "--lora-dropout 1", ("lora_dropout: must be in [0, 1)",)),
    "run: --max-grad-norm nan": Case("run", "--max-grad-norm nan", ("max_grad_norm: expected a finite number",)),
    "run: --max-duration nan": Case("run", "--max-duration nan", ("max_duration: expected a finite number",)),
    "run: --max-duration -3": Case("run", "--max-duration -3", ("max_duration: must be > 0",)),
    "run: --warmup-steps -1": Case("run", "--warmup-steps -1", ("warmup_steps: must be >= 0",)),
    "run: --eval-every -5": Case("run", "--eval-every -5", ("eval_every: must be >= 0",)),
    "run: --batch-size 0": Case("run", "--batch-size 0", ("batch_size: must be >= 1",)),
    "run: --device tpu": Case("run", "--device tpu", ("device: 'tpu' is not one of",)),
    "run: --lr-scheduler step": Case("run", "--lr-scheduler step", ("lr_scheduler",)),
    "run: --on-bad-row ignore": Case("run", "--on-bad-row ignore", ("on_bad_row",)),
    "run: --target-modules empty": Case("run", "--target-modules ,", ("target_modules: empty",)),
    "run: --train-manifest missing": Case("run", "--train-manifest {tmp}/nope.jsonl", ("train_manifest:", "nope.jsonl does not exist")),
    "run: --eval-manifest missing": Case("run", "--eval-manifest h={tmp}/nope.jsonl", ("eval_manifests.h:", "does not exist")),
    "run: --eval-manifest names twice": Case("run", "--eval-manifest a={heldout} --eval-manifest a={heldout}", ("eval_manifests: names must be unique",)),
    "run: --model missing folder": Case("run", "--model {tmp}/no-model", ("model:", "no-model does not exist")),
    "run: --output-dir is a file": Case("run", "--output-dir {afile}", ("--output-dir:", "is a file")),
    "run: --output-dir under a file": Case("run", "--output-dir {afile}/sub", ("--output-dir:", "cannot be created")),
    "run: --output-dir holds other files": Case("run", "--output-dir {foreign}", ("--output-dir:", "notes.txt")),
    "run: --max-steps missing value": Case("run", "--max-steps", ("--max-steps",)),
    "run: --model folder without a model": Case("run", RUN_DATA.replace("{model}", "{foreign}") + " --train-manifest {train}",
                                                ("cannot load model", "foreign"), stage="model"),
    "run: target module typo": Case("run", RUN_DATA + " --train-manifest {train} --target-modules qproj",
                                    ("target_modules: ['qproj'] not in the model",), stage="model"),
    "run: truncated WAV": Case("run", RUN_DATA + " --train-manifest {truncated_wav}", ("truncated_wav.jsonl:1:", "truncated"), stage="data"),
    "run: truncated OGG": Case("run", RUN_DATA + " --train-manifest {truncated_ogg}", ("truncated_ogg.jsonl:1:", "end-of-stream"), stage="data"),
    "run: wrong duration": Case("run", RUN_DATA + " --train-manifest {wrong_duration}",
                                ("wrong_duration.jsonl:1:", "duration says 9 s but the audio decodes to 0.6"), stage="data"),
    "run: NaN duration": Case("run", RUN_DATA + " --train-manifest {nan_duration}", ("nan_duration.jsonl:1:", "duration nan"), stage="data"),
    "run: negative duration": Case("run", RUN_DATA + " --train-manifest {negative_duration}", ("negative_duration.jsonl:1:", "duration -1.0"), stage="data"),
    "run: missing text field": Case("run", RUN_DATA + " --train-manifest {missing_text}", ("missing_text.jsonl:1: missing text field",), stage="data"),
    "run: missing audio file": Case("run", RUN_DATA + " --train-manifest {missing_audio}", ("missing_audio.jsonl:1:", "audio file not found"), stage="data"),
    # ---------------------------------------------------------------- python -m sweeps.run
    "sweep: --config missing": Case("sweep", "--config {tmp}/nope.yaml", ("nope.yaml: no such file",)),
    "sweep: --config bad YAML": Case("sweep", "--config {bad_yaml}", ("bad.yaml:2: not valid YAML (expected ',' or ']'",)),
    "sweep: unknown key": Case("sweep", "nums_samples=3", ("unknown key(s) nums_samples",)),
    "sweep: override without =": Case("sweep", "num_samples", ("override 'num_samples' is not KEY=VALUE",)),
    "sweep: ASHA's grace period beyond a trial's reports": Case("sweep", "trial.max_steps=50 scheduler.grace_period=2",
                                                                ("scheduler.grace_period: 2 reports, but the longest trial makes 1",)),
    "sweep: confirm_on manifest missing": Case("sweep", "'confirm_on={{test: {tmp}/nope.jsonl}}'", ("confirm_on.test:", "nope.jsonl does not exist")),
    "sweep: confirm_on without a path": Case("sweep", "'confirm_on={{test:data/test.jsonl}}'",
                                             ("confirm_on.test:data/test.jsonl: expected a manifest path, got None",)),
    "sweep: num_samples=0": Case("sweep", "num_samples=0", ("num_samples: must be >= 1",)),
    "sweep: trial.seed=-1": Case("sweep", "trial.seed=-1", ("trial: seed: must be >= 0",)),
    "sweep: trial.weight_decay=-5": Case("sweep", "trial.weight_decay=-5", ("trial: weight_decay: must be >= 0",)),
    "sweep: trial.max_steps=2.7": Case("sweep", "trial.max_steps=2.7", ("trial: max_steps: expected int",)),
    "sweep: trial.num_threads set": Case("sweep", "trial.num_threads=2", ("trial.num_threads: set per trial",)),
    "sweep: searched choice out of range": Case("sweep", "search.lora_r.choices=[4,-1]", ("search.lora_r: -1 gives an invalid trial",)),
    "sweep: search range not finite": Case("sweep", "search.learning_rate.high=.inf", ("search.learning_rate.high: expected a finite number",)),
    "sweep: searched target module typo": Case("sweep", "search.target_modules.choices=[qv,zz_proj] 'points_to_evaluate=[{{target_modules: qv}}]'",
                                               ("search.target_modules.choices: 'zz_proj'", "not in the model"), stage="modules"),
    "sweep: fixed target module typo": Case("sweep", NO_SEARCH + " trial.target_modules=qproj", ("trial.target_modules: 'qproj'", "not in the model"), stage="modules"),
    "sweep: target modules outside adapter scope": Case("sweep", NO_SEARCH + " trial.target_modules=proj_out trial.adapter_scope=encoder",
                                                        ("trial.target_modules: 'proj_out' with adapter_scope 'encoder'",), stage="modules"),
    "sweep: model folder without a model": Case("sweep", "trial.model={foreign}", ("trial.model: cannot read the config", "foreign"), stage="modules"),
    "sweep: bad rows in the train manifest": Case("sweep", "trial.train_manifest={bad_rows}",
                                                  ("bad_rows.jsonl: 3 bad row(s); fix them or set trial.on_bad_row=skip",
                                                   "bad_rows.jsonl:1: audio file not found", "bad_rows.jsonl:2:", "bad_rows.jsonl:3: not valid JSON"),
                                                  stage="modules"),
    "sweep: train manifest missing": Case("sweep", "trial.train_manifest={tmp}/nope.jsonl", ("trial.train_manifest:", "nope.jsonl does not exist")),
    "sweep: resources_per_trial.gpu too many": Case("sweep", "resources_per_trial.gpu=4096", ("resources_per_trial.gpu: each trial asks for 4096 GPU",)),
    "sweep: resources_per_trial.cpu too many": Case("sweep", "resources_per_trial.cpu=4096", ("resources_per_trial.cpu: each trial asks for 4096 CPU",)),
    "sweep: resources_per_trial.gpu=-1": Case("sweep", "resources_per_trial.gpu=-1", ("resources_per_trial.gpu",)),
    "sweep: max_wer_increase negative": Case("sweep", "max_wer_increase.canary=-1", ("max_wer_increase.canary",)),
    "sweep: --name with a slash": Case("sweep", "--name a/b", ("name: needs a plain folder name",)),
    "sweep: --num-cpus -1": Case("sweep", "--num-cpus -1", ("--num-cpus: must be >= 1",)),
    "sweep: --dashboard-port 99999": Case("sweep", "--dashboard-port 99999", ("--dashboard-port",)),
    "sweep: --dashboard-host unknown": Case("sweep", "--dashboard-host nowhere.invalid", ("--dashboard-host",)),
    "sweep: --dashboard-host elsewhere": Case("sweep", "--dashboard-host 203.0.113.7", ("--dashboard-host: '203.0.113.7' is not an address of this machine",)),
    "sweep: --resume a misspelt name": Case("sweep", "--resume --name demoo", ("--resume: no sweep 'demoo'", "demo"),
                                            files={"results/demo/run.json": "{}"}),
    "sweep: --analyze unknown sweep": Case("sweep", "--analyze nothing", ("--analyze nothing",)),
    "sweep: --config is a folder": Case("sweep", "--config {tmp}", ("a folder, not a file",)),
    "sweep: --storage is a file": Case("sweep", "--storage {afile}", ("--storage:", "is a file")),
    # ---------------------------------------------------------------- python -m sweeps.repro
    "repro: --config missing": Case("repro", "--config {tmp}/nope.json", ("--config", "nope.json: no such file")),
    "repro: --config bad JSON": Case("repro", "--config {bad_json}", ("bad.json:1: not valid JSON",)),
    "repro: --sweep unknown": Case("repro", "--sweep nothing", ("--sweep nothing",)),
    "repro: --cpus-per-trial=-1": Case("repro", REPRO + " --cpus-per-trial=-1", ("--cpus-per-trial: must be > 0",)),
    "repro: --cpus-per-trial=nan": Case("repro", REPRO + " --cpus-per-trial=nan", ("--cpus-per-trial: expected a finite number",)),
    "repro: --cpus-per-trial too many": Case("repro", REPRO + " --cpus-per-trial=4096", ("--cpus-per-trial: each seed run asks for 4096 CPU",)),
    "repro: --gpus-per-trial too many": Case("repro", REPRO + " --gpus-per-trial=4096", ("--gpus-per-trial: each seed run asks for 4096 GPU",)),
    "repro: --gpus-per-trial 1.5": Case("repro", REPRO + " --gpus-per-trial 1.5", ("--gpus-per-trial: a fraction",)),
    "repro: --output-dir is a file": Case("repro", REPRO + " --output-dir {afile}", ("--output-dir:", "is a file")),
    "repro: --min-effect -1": Case("repro", REPRO + " --min-effect -1", ("--min-effect: must be > 0",)),
    "repro: --min-effect-abs 0": Case("repro", REPRO + " --min-effect-abs 0", ("--min-effect-abs: must be > 0",)),
    "repro: --resamples 10": Case("repro", REPRO + " --resamples 10", ("--resamples: must be >= 100",)),
    "repro: --seeds=-1,2": Case("repro", REPRO + " --seeds=-1,2", ("--seeds", "must be >= 0")),
    "repro: --seeds a,b": Case("repro", REPRO + " --seeds a,b", ("--seeds", "expected integers")),
    "repro: --trials 0": Case("repro", REPRO + " --trials 0", ("--trials: must be >= 1",)),
    "repro: --trials abc": Case("repro", REPRO + " --trials abc", ("--trials",)),
    "repro: --trials and --seeds disagree": Case("repro", REPRO + " --seeds 3,4", ("--trials 1 and --seeds 3,4 (2 seeds) disagree",)),
    "repro: --from-scores with --trials": Case("repro", "--from-scores {recipe_json} --trials 3", ("--trials would be ignored",)),
    "repro: --determinism-reruns -1": Case("repro", REPRO + " --determinism-reruns -1", ("--determinism-reruns: must be >= 0",)),
    "repro: --seed -3": Case("repro", REPRO + " --seed -3", ("--seed: must be >= 0",)),
    "repro: --from-scores missing": Case("repro", "--from-scores {tmp}/nope.parquet", ("--from-scores", "no such file")),
    "repro: --from-scores with an override": Case("repro", "--from-scores {recipe_json} max_steps=5",
                                                  ("--from-scores reads stored scores and trains nothing: max_steps=5 would be ignored",)),
    "repro: override seed": Case("repro", REPRO + " seed=5", ("override seed: set per seed by repro",)),
    "repro: override lora_r=4.9": Case("repro", REPRO + " lora_r=4.9", ("override lora_r: expected int",)),
    "repro: override unknown field": Case("repro", REPRO + " lora_rank=4", ("override unknown", "lora_rank")),
    "repro: override's manifest missing": Case("repro", REPRO + " train_manifest={tmp}/nope.jsonl", ("override: train_manifest:", "nope.jsonl does not exist")),
    "repro: --confirm-on manifest missing": Case("repro", REPRO + " --confirm-on test={tmp}/nope.jsonl",
                                                 ("--confirm-on test=", ": eval_manifests.test:", "nope.jsonl does not exist")),
    "repro: --eval-set unknown": Case("repro", REPRO + " --eval-set nope", ("--eval-set nope", "heldout")),
    "repro: target module typo": Case("repro", REPRO + " target_modules=qproj", ("recipe.json: target_modules: ['qproj'] not in the model",), stage="modules"),
    "repro: target modules outside adapter scope": Case("repro", REPRO + " target_modules=proj_out adapter_scope=encoder",
                                                        ("recipe.json: adapter_scope: none of target_modules ['proj_out'] is in the model's encoder",), stage="modules"),
    "repro: bad rows in the recipe's manifest": Case("repro", REPRO + " train_manifest={bad_rows}",
                                                     ("bad_rows.jsonl: 3 bad row(s); fix them or override on_bad_row=skip",
                                                      "bad_rows.jsonl:1: audio file not found", "bad_rows.jsonl:2:", "bad_rows.jsonl:3: not valid JSON")),
    "repro: recipe's manifest missing": Case("repro", "--config {recipe_missing_json} --trials 1", ("recipe_missing.json: train_manifest:", "does not exist")),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir, tiny_manifests) -> dict[str, str]:
    """The paths the table's ``{name}`` placeholders stand for."""
    directory = tmp_path_factory.mktemp("bad-input")
    audio = directory / "audio"
    write_tone(audio / "whole.wav", 0.6, 330, seed=1)
    data = (audio / "whole.wav").read_bytes()
    (audio / "cut.wav").write_bytes(data[: len(data) // 3])
    tone = 0.3 * np.sin(2 * np.pi * 330 * np.arange(3 * 16000) / 16000)
    soundfile.write(audio / "whole.ogg", tone.astype(np.float32), 16000, format="OGG", subtype="VORBIS")
    data = (audio / "whole.ogg").read_bytes()
    (audio / "cut.ogg").write_bytes(data[: int(len(data) * 0.7)])
    row = {"audio_filepath": "audio/whole.wav", "text": "red lamp"}
    manifests = {
        "truncated_wav": [{**row, "audio_filepath": "audio/cut.wav"}],
        "truncated_ogg": [{**row, "audio_filepath": "audio/cut.ogg"}],
        "wrong_duration": [{**row, "duration": 9.0}],
        "negative_duration": [{**row, "duration": -1.0}],
        "missing_text": [{"audio_filepath": "audio/whole.wav"}],
        "missing_audio": [{**row, "audio_filepath": "audio/nope.wav"}],
    }
    paths = {name: str(write_manifest(directory / f"{name}.jsonl", rows)) for name, rows in manifests.items()}
    (directory / "nan_duration.jsonl").write_text('{"audio_filepath": "audio/whole.wav", "text": "red lamp", "duration": NaN}\n')
    (directory / "bad_rows.jsonl").write_text(  # missing audio, empty transcript, broken JSON, then a good row
        '{"audio_filepath": "audio/nope.wav", "text": "red lamp"}\n{"audio_filepath": "audio/whole.wav", "text": ""}\n'
        '{"audio_filepath": "audio/whole.wav", "text": \n{"audio_filepath": "audio/whole.wav", "text": "red lamp"}\n')
    paths["nan_duration"] = str(directory / "nan_duration.jsonl")
    paths["bad_rows"] = str(directory / "bad_rows.jsonl")
    (directory / "bad.json").write_text("{bad")
    (directory / "list.json").write_text("[1]")
    (directory / "unknown.json").write_text(json.dumps({"lora_rank": 8}))
    (directory / "bad.yaml").write_text("name: [unclosed\n")
    (directory / "afile").write_text("not a folder")
    (directory / "foreign").mkdir()
    (directory / "foreign" / "notes.txt").write_text("someone's notes")
    recipe = {"model": str(tiny_model_dir), "train_manifest": str(tiny_manifests["train"]),
              "eval_manifests": [["heldout", str(tiny_manifests["heldout"])]], "device": "cpu", "max_steps": 1}
    (directory / "recipe.json").write_text(json.dumps(recipe))
    (directory / "recipe_missing.json").write_text(json.dumps({**recipe, "train_manifest": str(directory / "nope.jsonl")}))
    for name in ("bad.json", "list.json", "unknown.json", "bad.yaml", "afile", "foreign", "recipe.json", "recipe_missing.json"):
        paths[name.replace(".", "_")] = str(directory / name)
    return {**paths, "model": str(tiny_model_dir), "train": str(tiny_manifests["train"]),
            "heldout": str(tiny_manifests["heldout"])}


def command_main(cli: str):
    if cli == "run":
        from trainable.run import main
    elif cli == "sweep":
        from sweeps.run import main
    else:
        from sweeps.repro.cli import main
    return main


def forbid(monkeypatch, target: str, what: str) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"bad input got as far as {what}")

    monkeypatch.setattr(target, refuse)


def run_case(case: Case, inputs: dict[str, str], tmp_path: Path, monkeypatch, capsys) -> tuple[int, str]:
    """The command's exit status and everything it printed."""
    monkeypatch.chdir(tmp_path)
    for relative, content in case.files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(content)
    forbid(monkeypatch, "ray.init", "starting Ray")
    forbid(monkeypatch, "trainable.train.train", "training")
    if case.stage != "data":
        forbid(monkeypatch, "trainable.data.load_audio", "decoding audio")
    if case.stage in ("flags", "modules"):
        forbid(monkeypatch, "trainable.runtime.load_runtime", "loading the model")
    if case.stage == "flags":
        forbid(monkeypatch, "trainable.model.module_tree", "building the model's module tree")
    argv = shlex.split(case.argv.format(tmp=tmp_path, **inputs))
    try:
        code = command_main(case.cli)(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    printed = capsys.readouterr()
    return code, printed.out + printed.err


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_exits_2_naming_what_is_wrong(case, inputs, tmp_path, monkeypatch, capsys):
    code, printed = run_case(case, inputs, tmp_path, monkeypatch, capsys)
    assert code == case.code, printed
    for name in case.names:
        assert name in printed, f"{name!r} not in: {printed}"
    assert "Traceback" not in printed


def test_the_table_holds_forty_cases_or_more_across_the_three_command_lines():
    assert len(CASES) >= 40
    assert {case.cli for case in CASES.values()} == {"run", "sweep", "repro"}


def test_a_row_error_names_its_file_and_line_once(inputs, tmp_path, monkeypatch, capsys):
    _, printed = run_case(CASES["run: missing text field"], inputs, tmp_path, monkeypatch, capsys)
    assert printed.count("missing_text.jsonl:1:") == 1, printed


@pytest.mark.parametrize("name", ["repro: --config bad JSON", "sweep: --config bad YAML"])
def test_a_malformed_config_file_is_named_once(name, inputs, tmp_path, monkeypatch, capsys):
    _, printed = run_case(CASES[name], inputs, tmp_path, monkeypatch, capsys)
    assert printed.count("bad.json" if "JSON" in name else "bad.yaml") == 1, printed


def test_a_missing_manifest_gets_no_hint_about_the_demo_model(inputs, tmp_path, monkeypatch, capsys):
    _, printed = run_case(CASES["sweep: train manifest missing"], inputs, tmp_path, monkeypatch, capsys)
    assert "demo.pretrain" not in printed


def test_a_failed_run_creates_no_output_folder(inputs, tmp_path, monkeypatch, capsys):
    code, _ = run_case(CASES["run: wrong duration"], inputs, tmp_path, monkeypatch, capsys)
    assert code == 2 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("cli, argv, name", [
    ("trainable.run", ["--log-level", "chatty"], "--log-level"),
    ("trainable.run", ["--num-threads", "-2"], "num_threads"),
    ("sweeps.run", ["--num-cpus", "-1"], "--num-cpus"),
    ("sweeps.repro", ["--cpus-per-trial=-1"], "--cpus-per-trial"),
])
def test_the_shell_sees_exit_status_2_and_no_traceback(cli, argv, name, tmp_path):
    done = subprocess.run([sys.executable, "-m", cli, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert name in done.stderr and "Traceback" not in done.stderr
