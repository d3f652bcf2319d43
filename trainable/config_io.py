"""Configs from files and ``key=value`` overrides, for all three command lines.

One reader for every recipe file a user holds (a JSON recipe, a sweep's ``best.json``, a
run's ``summary.json``, a YAML with a ``trial:`` section), one override parser, one check
for unknown keys and one number coercer, so ``trainable.run``, ``sweeps.run`` and
``sweeps.repro`` accept and refuse the same input with the same messages.

PyYAML and the standard library only: ``--help`` and a mistyped key answer in a second.
(OmegaConf and pydantic were considered: the recipe is a frozen dataclass that validates
itself and must import nothing heavy, and our errors must name the file and the dotted
key; either library would add a second schema and messages we would rewrap anyway.)
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
from pathlib import Path
from typing import Any, Iterable


class ConfigError(ValueError):
    """A config value, key or file is wrong; the message names the field, key or file."""


# --------------------------------------------------------------------------- files


def read_json(path: str | Path) -> Any:
    return _parse_file(path, json.loads, json.JSONDecodeError, lambda error: f":{error.lineno}: not valid JSON ({error.msg})")


def read_yaml(path: str | Path) -> Any:
    import yaml

    return _parse_file(path, yaml.safe_load, yaml.YAMLError, _yaml_problem)


def _yaml_problem(error: Exception) -> str:
    """``:3: not valid YAML (expected ',' or ']' ...)``: the line where PyYAML noticed it."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if mark is None or not problem:
        return f": not valid YAML: {error}"
    return f":{mark.line + 1}: not valid YAML ({problem}, column {mark.column + 1})"


def _parse_file(path: str | Path, parse, parse_error: type[Exception], describe) -> Any:
    """``parse`` of a text file; a missing, binary or malformed file is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
    try:
        return parse(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    except parse_error as error:
        raise ConfigError(f"{path}{describe(error)}") from None


def read_config_file(path: str | Path) -> Any:
    """The content of a YAML (.yaml/.yml) or JSON (any other name) file."""
    path = Path(path)
    return read_yaml(path) if path.suffix.lower() in (".yaml", ".yml") else read_json(path)


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or JSON file that must hold a mapping of keys."""
    return as_mapping(read_config_file(path), path)


def as_mapping(data: Any, path: str | Path) -> dict[str, Any]:
    """``data`` read from ``path``, which must be a mapping of keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe fields held by any recipe file: a plain recipe, or the ``config:`` of a
    best.json or summary.json, or the ``trial:`` section of a sweep YAML."""
    return recipe_fields(read_config_file(path), path)


def recipe_fields(data: Any, path: str | Path) -> dict[str, Any]:
    """``read_recipe`` of content already read from ``path``."""
    data = as_mapping(data, path)
    for section in ("trial", "config"):
        if isinstance(data.get(section), dict):
            return data[section]
    if data.get("complete") is False:  # a best.json of an unfinished sweep that chose no recipe yet
        raise ConfigError(f"{path}: holds no recipe: {data.get('note') or 'its sweep is unfinished'}")
    return data


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """``trial.max_steps=800`` -> (["trial", "max_steps"], 800); the value is read as YAML."""
    import yaml

    key, sep, value = text.partition("=")
    keys = [part.strip() for part in key.split(".")]
    if not sep or not all(keys):
        raise ConfigError(f"override {text!r} is not KEY=VALUE (dotted keys, e.g. trial.max_steps=800)")
    try:
        return keys, yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {key}: cannot read value {value!r}") from None


def apply_override(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set (or, with a null value, remove) one dotted key; validation later names bad keys."""
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None or isinstance(child, str):
            # e.g. ``scheduler: none`` in the YAML and ``scheduler.grace_period=2`` given.
            child = {"type": child} if isinstance(child, str) else {}
            node[key] = child
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {'.'.join(keys[: depth + 1])} is not a mapping")
        node = child
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value


# --------------------------------------------------------------------------- values


def reject_unknown(given: Iterable[str], known: Iterable[str], where: str = "", noun: str = "key") -> None:
    """Name every key that is not a known one (as ``where.key``, with the closest known key
    when one is close: a typo is the usual cause), and list the known ones."""
    known = sorted(known)
    unknown = sorted(set(map(str, given)) - set(known))
    if unknown:
        prefix = f"{where}." if where else ""
        names = ", ".join(prefix + key + did_you_mean(key, known) for key in unknown)
        raise ConfigError(f"unknown {noun}(s) {names}; known: {', '.join(known) or 'none'}")


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """`` (did you mean lora_r?)`` for a key close to a known one, else ``""``."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def coerce_number(value: Any, kind: type, where: str) -> int | float:
    """An int or a finite float from YAML, the command line, Tune or numpy, naming ``where``
    on failure. ``4.9`` is no integer (refused, not rounded); YAML reads ``1e-4`` as a
    string, hence float() of strings. Integers stay exact (no float round trip above 2**53)."""
    exact = _as_int(value) if kind is int else None
    if exact is not None:
        return exact
    number = _as_float(value)
    if number is None:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if kind is int and not number.is_integer():
        raise ConfigError(f"{where}: expected int (a whole number), got {value!r}")
    return int(number) if kind is int else number


def _as_int(value: Any) -> int | None:
    """An integer given as one (Python, numpy) or as digits; None for anything else."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def coerce_bool(value: Any, where: str) -> bool:
    """true/false, also as the strings a command line or YAML override gives."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise ConfigError(f"{where}: expected true or false, got {value!r}")
