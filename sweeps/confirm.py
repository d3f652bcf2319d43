"""The confirm set: the eval set a sweep keeps untouched for repro (``confirm_on``).

Shared by the sweep, which refuses a confirm set its trials score, and repro, which reads a
sweep YAML's confirm set, so both read the YAML's ``{test: path}`` by the same rule.
"""

from __future__ import annotations

from typing import Any

from trainable.config_io import ConfigError


def confirm_pairs(raw: Any) -> tuple[tuple[str, str], ...]:
    """A sweep YAML's ``confirm_on: {test: path}``: at most one (name, manifest) pair."""
    if not isinstance(raw, dict) or len(raw) > 1:
        raise ConfigError(f"confirm_on: one {{name: manifest}} pair, the set repro confirms on, got {raw!r}")
    for name, path in raw.items():
        if not isinstance(path, str) or not path.strip():
            raise ConfigError(f"confirm_on.{name}: expected a manifest path, got {path!r} "
                              "(in YAML, `{test: data/test.jsonl}` needs the space after the colon)")
    return tuple((str(name), path) for name, path in raw.items())
