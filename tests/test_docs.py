"""The commands the docs give work as written.

Users copy commands from README.md, docs/*.md, data/demo/README.md, the comments of the sweep
YAMLs and cluster.yaml, and the examples of each ``--help``. Every ``python -m`` command found
there is parsed by the entry point's own argument parser (the run stops right after parsing),
and its recipe or sweep overrides are built into the recipe or sweep they describe: a renamed
flag, a flag given the wrong shape, a mistyped key or a placeholder manifest left in place
fails here. Commands with a placeholder of their own (``...``, ``…``, ``<...>``) are not
verbatim and are skipped.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = ("README.md", "docs/cluster.md", "docs/benchmarks.md", "data/demo/README.md", "results/README.md")
COMMENTED_YAML = ("cluster.yaml", "sweeps/configs/demo.yaml", "sweeps/configs/moonshine_tiny.yaml")
# Each entry point a user starts with ``python -m``: the module whose ``main(argv)`` parses it.
ENTRY_POINTS = {
    "trainable.run": "trainable.run",
    "sweeps.run": "sweeps.run",
    "sweeps.repro": "sweeps.repro.cli",
    "benchmarks.trial": "benchmarks.trial",
    "benchmarks.bootstrap": "benchmarks.bootstrap",
    "benchmarks.search": "benchmarks.search.__main__",
    "benchmarks.search_table": "benchmarks.search_table",
    "demo.corpus": "demo.corpus",
    "demo.pretrain": "demo.pretrain",
    "demo.score": "demo.score",
}
OTHER_MODULES = {"pytest", "venv"}  # other tools' modules the docs start
# The manifests sweeps/configs/moonshine_tiny.yaml holds until a user names theirs.
PLACEHOLDER_DATA = "path/to/"


def commands_in_markdown(path: Path) -> list[tuple[str, str]]:
    """(where, command) for each line of a ```bash block and each inline code span that is a command."""
    text = path.read_text(encoding="utf-8")
    found = []
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        first_line = text[: block.start()].count("\n") + 2
        for offset, line in enumerate(block.group(1).replace("\\\n", " ").splitlines()):
            if line.strip():
                found.append((f"{path.relative_to(ROOT)}:{first_line + offset}", line))
    prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for span in re.finditer(r"`([^`]+)`", prose):
        command = " ".join(span.group(1).split())
        if re.match(r"(\w+=\S+ )*python -m ", command):
            found.append((f"{path.relative_to(ROOT)}:{prose[: span.start()].count(chr(10)) + 1}", command))
    return found


def commands_in_yaml_comments(path: Path) -> list[tuple[str, str]]:
    """(where, command) for each command in a YAML file's comments: a comment line that starts
    with one, or one in parentheses in a sentence; a trailing backslash continues it."""
    found, pending = [], ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        comment = line.lstrip()[1:].strip() if line.lstrip().startswith("#") else ""
        if pending:
            comment, pending = pending + " " + comment, ""
        start = comment.find("python -m ")
        if start < 0:
            continue
        if comment.startswith(("ray exec", "pip ")):
            start = 0
        command = end_of_command(comment[start:])
        if command.endswith("\\"):
            pending = command[:-1]
            continue
        found.append((f"{path.relative_to(ROOT)}:{number}", command))
    return found


def end_of_command(text: str) -> str:
    """A command cut where its sentence goes on: at a ')' or a ',' before a space, outside quotes."""
    quote = ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ")" or char == "," and text[index + 1:index + 2] in ("", " "):
            return text[:index].strip()
    return text.strip()


def commands_in_help() -> list[tuple[str, str]]:
    """The example lines of each ``--help`` that shows some."""
    found = []
    for name in ("trainable.run", "sweeps.run", "sweeps.repro", "benchmarks.search", "benchmarks.search_table"):
        text = importlib.import_module(ENTRY_POINTS[name]).build_parser().format_help().replace("\\\n", " ")
        found += [(f"python -m {name} --help", line.strip()) for line in text.splitlines() if line.strip().startswith("python -m ")]
    return found


def python_commands(line: str) -> list[list[str]]:
    """The ``python -m`` commands in a shell line, also inside a quoted ``ray exec "cd ... && ..."``."""
    tokens = shlex.split(line, comments=True)
    commands, current = [], []
    for token in tokens + [";"]:
        if token in ("&&", ";", "|", "||"):
            while current and re.fullmatch(r"\w+=\S*", current[0]):  # VAR=value before the command
                current.pop(0)
            if current[:2] == ["python", "-m"]:
                commands.append(current[2:])
            current = []
        elif "python -m " in token and token is not tokens[0]:
            commands += python_commands(token)
        else:
            current.append(token)
    return commands


def documented_commands() -> list[tuple[str, list[str]]]:
    lines = [found for name in MARKDOWN for found in commands_in_markdown(ROOT / name)]
    lines += [found for name in COMMENTED_YAML for found in commands_in_yaml_comments(ROOT / name)]
    lines += commands_in_help()
    commands = []
    for where, line in lines:
        if re.search(r"\.\.\.|…|<[^>]*>", line):
            continue
        line = re.sub(r"\[(--[\w-]+)\]", r"\1", line)  # "[--quick]": an optional flag, shown
        commands += [(where, argv) for argv in python_commands(line)]
    return commands


COMMANDS = documented_commands()


def test_the_docs_give_commands_of_every_entry_point():
    """The extraction finds what it should, so an empty list cannot pass the test below."""
    started = {argv[0] for _, argv in COMMANDS}
    assert set(ENTRY_POINTS) <= started, set(ENTRY_POINTS) - started
    assert len(COMMANDS) > 40, COMMANDS


class Parsed(Exception):
    """Raised in place of running the command once its arguments parsed."""


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[f"{w} {' '.join(a)[:60]}" for w, a in COMMANDS])
def test_a_documented_command_parses_and_names_a_valid_recipe_or_sweep(where, argv, monkeypatch, capsys):
    module = argv[0]
    if module in OTHER_MODULES:
        return
    assert module in ENTRY_POINTS, f"{where}: python -m {module} is no entry point of this project"
    for method in ("parse_args", "parse_intermixed_args"):
        original = getattr(argparse.ArgumentParser, method)
        monkeypatch.setattr(argparse.ArgumentParser, method,
                            lambda self, args=None, namespace=None, _parse=original: _raise(Parsed(_parse(self, args, namespace))))
    try:
        importlib.import_module(ENTRY_POINTS[module]).main(argv[1:])
    except SystemExit as stop:
        if stop.code == 0 and "--help" in argv:
            return
        pytest.fail(f"{where}: python -m {' '.join(argv)} exits {stop.code}: {capsys.readouterr().err.strip()[-500:]}")
    except Parsed as parsed:
        check_values(module, parsed.args[0], where)
    else:
        pytest.fail(f"{where}: python -m {module} ran without parsing arguments")


def _raise(error: Exception):
    raise error


def check_values(module: str, args: argparse.Namespace, where: str) -> None:
    """What the parser leaves to the command: recipe fields and sweep keys, read as the command reads them."""
    if module == "trainable.run":
        from trainable.run import config_from_args

        args.config = None  # a recipe file the reader may not have yet (results/demo/best.json)
        config_from_args(args, environ={})
    elif module == "sweeps.run":
        check_sweep(args, where)
    elif module == "sweeps.repro":
        from sweeps.repro.cli import parse_overrides
        from sweeps.repro.selection import parse_budget_flags, parse_confirm_flag
        from trainable.config import TrialConfig

        TrialConfig.from_dict({**TrialConfig().to_dict(), **parse_overrides(args.overrides)})
        parse_budget_flags(args.max_wer_increase)
        if args.confirm_on:
            parse_confirm_flag(args.confirm_on)


def check_sweep(args: argparse.Namespace, where: str) -> None:
    from sweeps.run import DEFAULT_CONFIG
    from sweeps.search.config import load_sweep_config

    if args.analyze:  # only budgets may change under --analyze (sweeps.run.analyze)
        assert all(o.startswith("max_wer_increase.") for o in args.overrides), f"{where}: {args.overrides}"
    sweep = load_sweep_config(ROOT / (args.config or DEFAULT_CONFIG), [*args.overrides, *([f"name={args.name}"] if args.name else [])])
    data = [("trial.train_manifest", sweep.trial.train_manifest)]
    data += [(f"trial.eval_manifests.{name}", path) for name, path in sweep.trial.eval_manifests]
    data += [(f"confirm_on.{name}", path) for name, path in sweep.confirm_on]
    left = [f"{key}={path}" for key, path in data if path.startswith(PLACEHOLDER_DATA)]
    assert not left, f"{where}: the sweep still reads the YAML's placeholder data: {', '.join(left)}"


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_each_help_shows_the_command_that_runs_it(module, capsys):
    """``usage: corpus.py`` is no command a user can run from the repository root."""
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(ENTRY_POINTS[module]).main(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m {module} ")


def test_not_slow_leaves_out_every_test_that_starts_ray():
    """README: ``python -m pytest -m "not slow"`` skips the tests that start Ray or train end to end."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "ray and not slow", str(ROOT / "tests")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    selected = [line for line in out.stdout.splitlines() if "::" in line]
    assert out.returncode == 5 and not selected, out.stdout[-3000:] + out.stderr[-2000:]
