"""Counts in printed and written text: "1 trial", "2 trials", never "1 trials"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the number it takes; ``plural`` where adding "s" is wrong."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
