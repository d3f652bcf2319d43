"""How repro prints its figures: WERs in percent, WER differences in points, probabilities, counts.

A figure printed beside the threshold a rule compares it with (a CI bound against 0, POI against
0.95, a budget's bound against its limit, the CI width against the minimum effect) gets as many
decimals as it takes to stay on its side of that threshold: a lower bound of 0.002 points prints
as +0.002, not as +0.00 beside "the CI lies above 0", and a POI of 0.948 as 0.948, not as 0.95
beside "POI < 0.95".
"""

from __future__ import annotations

from typing import Sequence

MAX_DECIMALS = 6  # 1e-6 WER points: finer than one word in a million


def points(value: float, sign: bool = False) -> str:
    """WER difference in percentage points, the unit people quote gains in."""
    return _format(_rounded(100 * value, 2), 2, sign)


def percent(value: float) -> str:
    return f"{points(value)}%"


def beside(
    values: Sequence[float], threshold: float, scale: float = 100.0, sign: bool = False, decimals: int = 2, tolerance: float = 0.0,
) -> tuple[list[str], str]:
    """``values`` and ``threshold`` times ``scale`` (100: WER points), to the fewest decimals (at
    least ``decimals``) at which each printed value keeps its order against the printed threshold
    and no figure other than 0 prints as zero. Values within ``tolerance`` of the threshold count
    as equal to it (the rule's own slack)."""
    figures = [*values, threshold]
    for places in range(decimals, MAX_DECIMALS + 1):
        shown = [_rounded(scale * value, places) for value in figures]
        keeps_order = all(_order(s, shown[-1]) == _order(v, threshold, tolerance) for v, s in zip(values, shown))
        if keeps_order and all((s == 0) == (v == 0) for v, s in zip(figures, shown)):
            break
    text = [_format(s, places, sign) for s in shown]
    return text[:-1], text[-1]


def probability(value: float, threshold: float, decimals: int = 2) -> str:
    """A probability (POI) beside the threshold a rule holds it to."""
    return beside([value], threshold, scale=1.0, decimals=decimals)[0][0]


def listing(items: Sequence[object]) -> str:
    """``4``, ``3 and 4``, ``0, 1, 3 and 4``."""
    words = [str(item) for item in items]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _rounded(value: float, places: int) -> float:
    return round(value, places) + 0.0  # + 0.0: never "-0.00"


def _order(a: float, b: float, tolerance: float = 0.0) -> int:
    return 0 if abs(a - b) <= tolerance else (1 if a > b else -1)


def _format(value: float, places: int, sign: bool) -> str:
    return f"{value:+.{places}f}" if sign else f"{value:.{places}f}"
