"""Is a WER gain real, and did other eval sets stay within budget? Paired and two-level
bootstrap over seeds and held-out utterances.

Per seed a paired bootstrap (Bisani & Ney 2004: the same resampled utterances for baseline
and tuned), speakers resampled as blocks when there are at least 10 of them (Liu & Peng
2020); across seeds a two-level bootstrap (seeds, then utterances) of the mean delta; the
first verdict that holds of regression, stable gain, unstable, no significant change; an
``underpowered`` flag that says what would be needed. A budgeted eval set (a canary whose WER
may rise by at most m) gets a one-sided non-inferiority decision from the same bootstrap.

Delta is baseline WER minus tuned WER, in absolute WER (0.01 = one point): positive means the
tuned adapter makes fewer errors.

numpy only at import time (pandas is imported where a table is read), so the repro CLI's
``--from-scores`` path and its tests never touch torch or ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Collection, NamedTuple, Sequence

import numpy as np

from sweeps.budget import WER_SLACK, over_budget
from sweeps.repro.figures import beside, points
from sweeps.wording import counted

SYSTEMS = ("baseline", "tuned")
# The scores table, one row per (seed, system, eval_set, utterance); extra columns are allowed.
SCORE_COLUMNS = {
    "seed": "int",
    "system": "'baseline' or 'tuned'",
    "eval_set": "str",
    "utterance_id": "str",
    "speaker": "str, empty where unknown",
    "ref_words": "int, reference words after normalisation",
    "errors": "int, substitutions + deletions + insertions",
    "reference": "str",
    "hypothesis": "str",
}
VERDICTS = ("regression", "stable gain", "unstable", "no significant change")
MIN_SPEAKERS_FOR_BLOCKS = 10
MIN_SEEDS = 5
MIN_POI = 0.95  # a stable gain's probability of improvement, at least
# Fewer held-out units than this and a bootstrap over them cannot show the spread (one
# utterance gives a CI of zero width): the gain is underpowered, a budget inconclusive.
MIN_UNITS = 10
# Needing more than this many times the seeds or held-out units there are is no plan to act on:
# "what would be needed" says the target is out of reach instead of printing the number.
MAX_SCALE_UP = 100
# Standard normal quantiles: a two-sided 95 % interval is this many standard errors wide, and a
# one-sided 95 % bound lies this many standard errors from the mean.
Z_TWO_SIDED_WIDTH = 2 * 1.959964
Z_ONE_SIDED = 1.644854
# Elements of one (resamples x units) index chunk: bounds memory to ~100 MB whatever the set size.
CHUNK_ELEMENTS = 1 << 22


class ScoresError(ValueError):
    """A scores table does not match the schema; the message names the file and the problem."""


# --------------------------------------------------------------------------- the scores table


def validate_scores(table: Any, source: str = "scores table") -> Any:
    """Check a scores DataFrame against the schema and return a cleaned copy.

    Every problem is reported with ``source`` (the file) and what to fix, because a user who
    hand-builds a table from another toolkit's output will meet these errors first.
    """
    missing = [name for name in SCORE_COLUMNS if name not in table.columns]
    if missing:
        wanted = "; ".join(f"{name} ({kind})" for name, kind in SCORE_COLUMNS.items())
        raise ScoresError(f"{source}: missing column(s) {', '.join(missing)}. A scores table needs: {wanted}")
    if len(table) == 0:
        raise ScoresError(f"{source}: no rows")
    table = table.copy()
    table["speaker"] = table["speaker"].fillna("").astype(str)
    for name in ("seed", "ref_words", "errors"):
        table[name] = _integer_column(table, name, source)
    for name in ("system", "eval_set", "utterance_id"):
        _check_no_nulls(table, name, source)
        table[name] = table[name].astype(str)
    for name in ("reference", "hypothesis"):
        table[name] = table[name].fillna("").astype(str)
    _check_systems(table, source)
    _check_unique_rows(table, source)
    _check_pairing(table, source)
    return table


def _integer_column(table: Any, name: str, source: str) -> np.ndarray:
    values = table[name]
    rows = _row_list(values.isna().to_numpy())
    if rows:
        raise ScoresError(f"{source}: column {name!r} is empty at row(s) {rows}; it must be an integer")
    try:
        numbers = values.to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise ScoresError(f"{source}: column {name!r} must hold integers, got dtype {values.dtype}") from None
    bad = ~np.isfinite(numbers) | (numbers != np.round(numbers))
    if name != "seed":
        bad |= numbers < 0
    if bad.any():
        kind = "integers" if name == "seed" else "non-negative integers"
        raise ScoresError(f"{source}: column {name!r} must hold {kind}; bad value(s) at row(s) {_row_list(bad)}")
    return numbers.astype(np.int64)


def _check_no_nulls(table: Any, name: str, source: str) -> None:
    rows = _row_list(table[name].isna().to_numpy())
    if rows:
        raise ScoresError(f"{source}: column {name!r} is empty at row(s) {rows}")


def _check_systems(table: Any, source: str) -> None:
    bad = ~table["system"].isin(SYSTEMS).to_numpy()
    if bad.any():
        values = sorted(set(table["system"][bad]))
        raise ScoresError(
            f"{source}: column 'system' has value(s) {', '.join(map(repr, values))} at row(s) {_row_list(bad)}; "
            f"expected 'baseline' or 'tuned'"
        )


def _check_unique_rows(table: Any, source: str) -> None:
    keys = ["seed", "system", "eval_set", "utterance_id"]
    duplicated = table.duplicated(keys, keep=False).to_numpy()
    if duplicated.any():
        first = table[duplicated].iloc[0]
        example = ", ".join(f"{key}={first[key]!r}" for key in keys)
        raise ScoresError(f"{source}: {int(duplicated.sum())} rows repeat a (seed, system, eval_set, utterance_id); e.g. {example}")


def _check_pairing(table: Any, source: str) -> None:
    """Baseline and tuned of every seed must score the same utterances with the same references,
    or a paired bootstrap would compare different test sets."""
    for eval_set, rows in table.groupby("eval_set", sort=False):
        expected = None
        for (seed, system), group in rows.groupby(["seed", "system"], sort=True):
            ids = frozenset(group["utterance_id"])
            if expected is None:
                expected, where = ids, f"seed {seed} {system}"
            elif ids != expected:
                extra, lacking = sorted(ids - expected)[:3], sorted(expected - ids)[:3]
                raise ScoresError(
                    f"{source}: eval set {eval_set!r}: seed {seed} {system} scores a different set of utterances "
                    f"than {where} (extra {extra}, lacking {lacking}); every seed and system must score the same utterances"
                )
        for seed, group in rows.groupby("seed", sort=True):
            present = set(group["system"])
            if present != set(SYSTEMS):
                lacking = sorted(set(SYSTEMS) - present)
                raise ScoresError(f"{source}: eval set {eval_set!r}: seed {seed} has no {lacking[0]} rows; both systems are needed per seed")
        words = rows.groupby("utterance_id")["ref_words"].nunique()
        if (words > 1).any():
            utterance = words.index[words.to_numpy() > 1][0]
            raise ScoresError(
                f"{source}: eval set {eval_set!r}: utterance {utterance!r} has different ref_words across seeds/systems; "
                f"the reference must be the same for every row of an utterance"
            )


def _row_list(mask: np.ndarray, limit: int = 5) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def read_scores(path: str) -> Any:
    """Read and validate a scores table (Parquet, or CSV for hand-made tables)."""
    import pandas as pd

    try:
        table = pd.read_csv(path) if str(path).endswith(".csv") else pd.read_parquet(path)
    except FileNotFoundError:
        raise ScoresError(f"{path}: no such file") from None
    except Exception as error:  # pyarrow raises several types for a file that is not Parquet
        raise ScoresError(f"{path}: cannot be read as a scores table ({type(error).__name__}: {error})") from None
    return validate_scores(table, source=str(path))


def eval_sets_in_order(table: Any) -> list[str]:
    """Eval sets in the order they first appear (repro writes the primary one first)."""
    return list(dict.fromkeys(table["eval_set"]))


# --------------------------------------------------------------------------- aligned counts


@dataclass(frozen=True)
class PairedScores:
    """One eval set's error counts aligned as seeds x utterances, both systems, same utterances."""

    eval_set: str
    seeds: np.ndarray  # (S,)
    utterance_ids: np.ndarray  # (n,)
    speakers: np.ndarray  # (n,), "" where unknown
    ref_words: np.ndarray  # (n,)
    baseline_errors: np.ndarray  # (S, n)
    tuned_errors: np.ndarray  # (S, n)
    dropped_empty: int = 0  # utterances whose normalised reference is empty: not scored

    @property
    def baseline_wer(self) -> np.ndarray:
        return self.baseline_errors.sum(1) / self.ref_words.sum()

    @property
    def tuned_wer(self) -> np.ndarray:
        return self.tuned_errors.sum(1) / self.ref_words.sum()

    @property
    def delta(self) -> np.ndarray:
        """Per seed: baseline WER - tuned WER (positive = tuned is better)."""
        return (self.baseline_errors.sum(1) - self.tuned_errors.sum(1)) / self.ref_words.sum()


def paired_scores(table: Any, eval_set: str) -> PairedScores:
    """Align a validated table's rows of one eval set into seeds x utterances matrices."""
    rows = table[table["eval_set"] == eval_set]
    if rows.empty:
        known = ", ".join(map(repr, eval_sets_in_order(table)))
        raise ScoresError(f"eval set {eval_set!r} is not in the scores table (it has {known})")
    first = rows[(rows["seed"] == rows["seed"].min()) & (rows["system"] == "baseline")].sort_values("utterance_id")
    scored = first["ref_words"].to_numpy() > 0
    if not scored.any():
        raise ScoresError(f"eval set {eval_set!r}: every utterance has an empty normalised reference (ref_words 0); nothing to score")
    utterance_ids = first["utterance_id"].to_numpy()[scored]
    seeds = np.sort(rows["seed"].unique())
    matrices = {}
    for system in SYSTEMS:
        wide = rows[rows["system"] == system].pivot(index="seed", columns="utterance_id", values="errors")
        matrices[system] = wide.loc[seeds, utterance_ids].to_numpy(dtype=np.int64)
    return PairedScores(
        eval_set=eval_set,
        seeds=seeds.astype(np.int64),
        utterance_ids=utterance_ids,
        speakers=first["speaker"].to_numpy()[scored],
        ref_words=first["ref_words"].to_numpy(dtype=np.int64)[scored],
        baseline_errors=matrices["baseline"],
        tuned_errors=matrices["tuned"],
        dropped_empty=int((~scored).sum()),
    )


def resampling_blocks(speakers: np.ndarray) -> tuple[np.ndarray, str]:
    """Block index per utterance, and the unit name.

    Speakers become blocks when there are at least 10 of them (utterances of one speaker share
    voice and channel, so their errors are correlated); an utterance without a speaker is its
    own block. With fewer speakers, block resampling would have too few units to be stable.
    """
    known = speakers[speakers != ""]
    if len(np.unique(known)) < MIN_SPEAKERS_FOR_BLOCKS:
        return np.arange(len(speakers)), "utterance"
    index: dict[Any, int] = {}
    blocks = [index.setdefault(speaker if speaker != "" else ("", i), len(index)) for i, speaker in enumerate(speakers)]
    return np.asarray(blocks, dtype=np.int64), "speaker"


# --------------------------------------------------------------------------- the bootstrap


@dataclass(frozen=True)
class BootstrapDraws:
    """Resampled deltas: ``per_seed`` (B, S) for each seed's own CI, ``mean`` (B,) for the pooled one."""

    per_seed: np.ndarray
    mean: np.ndarray
    unit: str
    units: int


def bootstrap(scores: PairedScores, resamples: int = 10_000, seed: int = 0, chunk_elements: int = CHUNK_ELEMENTS) -> BootstrapDraws:
    """Paired bootstrap per seed and two-level bootstrap of the mean delta, in one pass.

    Each resample draws blocks (speakers or utterances) with replacement; the SAME draw serves
    baseline and tuned (paired) and every seed, because all seeds are scored on the same held-out
    set, so an utterance that is hard for one seed is hard for all: sharing the draw keeps that
    correlation in the pooled CI. The pooled level also resamples seeds with replacement.
    Utterance and seed draws come from separate child streams of ``seed``, so the result does
    not depend on the chunk size.
    """
    blocks, unit = resampling_blocks(scores.speakers)
    n_blocks = int(blocks.max()) + 1
    words = np.bincount(blocks, weights=scores.ref_words, minlength=n_blocks)
    gap = scores.baseline_errors - scores.tuned_errors
    block_gap = np.stack([np.bincount(blocks, weights=row, minlength=n_blocks) for row in gap])  # (S, K)
    n_seeds = len(scores.seeds)
    unit_stream, seed_stream = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    chunk = max(1, min(resamples, chunk_elements // n_blocks))
    per_seed, means = [], []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = _block_counts(unit_stream.integers(0, n_blocks, size=(size, n_blocks), dtype=np.int64), n_blocks)
        deltas = (counts @ block_gap.T) / (counts @ words)[:, None]  # (size, S)
        picked = seed_stream.integers(0, n_seeds, size=(size, n_seeds), dtype=np.int64)
        per_seed.append(deltas)
        means.append(np.take_along_axis(deltas, picked, axis=1).mean(1))
    return BootstrapDraws(np.concatenate(per_seed), np.concatenate(means), unit, n_blocks)


def _block_counts(draws: np.ndarray, n_blocks: int) -> np.ndarray:
    """How often each block was drawn in each resample: (B, K) floats, ready for a matmul."""
    offsets = np.arange(draws.shape[0], dtype=np.int64)[:, None] * n_blocks
    flat = np.bincount((draws + offsets).ravel(), minlength=draws.size)
    return flat.reshape(draws.shape).astype(np.float64)


def interval(draws: np.ndarray) -> list[float]:
    """95 % percentile interval (linear interpolation, numpy's default)."""
    low, high = np.percentile(draws, [2.5, 97.5])
    return [float(low), float(high)]


def probability_of_improvement(draws: np.ndarray) -> float:
    """Share of resamples in which the tuned system makes fewer errors (delta > 0)."""
    return float(np.mean(draws > 0))


# --------------------------------------------------------------------------- verdict and power


class Verdict(NamedTuple):
    """The verdict and the rule that decided it (one of ``VERDICT_RULES``)."""

    name: str
    rule: str


# Each rule, in the notes' order, with the verdict it gives.
VERDICT_RULES = {
    "ci_below_0": "regression",
    "all_seeds_improve": "stable gain",
    "seeds_disagree": "unstable",
    "opposite_seed": "unstable",
    "seed_not_improved": "no significant change",
    "poi_below_95": "no significant change",
    "ci_includes_0": "no significant change",
}


def decide_verdict(mean_delta: float, ci: Sequence[float], poi: float, seed_deltas: Sequence[float], seed_cis: Sequence[Sequence[float]]) -> Verdict:
    """The notes' rules, evaluated in order; the first that holds is the verdict."""
    rule = _verdict_rule(mean_delta, ci, poi, seed_deltas, seed_cis)
    return Verdict(VERDICT_RULES[rule], rule)


def _verdict_rule(mean_delta: float, ci: Sequence[float], poi: float, seed_deltas: Sequence[float], seed_cis: Sequence[Sequence[float]]) -> str:
    low, high = ci
    if high < 0:
        return "ci_below_0"
    if low > 0 and poi >= MIN_POI and all(d > 0 for d in seed_deltas):
        return "all_seeds_improve"
    if any(c[0] > 0 for c in seed_cis) and any(c[1] < 0 for c in seed_cis):
        return "seeds_disagree"
    sign = np.sign(mean_delta)
    if (low > 0 or high < 0) and any(np.sign(d) == -sign for d in seed_deltas if d != 0):
        return "opposite_seed"
    if low > 0:  # above 0, yet not a stable gain: a seed that did not improve, or POI < 0.95
        return "seed_not_improved" if any(d <= 0 for d in seed_deltas) else "poi_below_95"
    return "ci_includes_0"


@dataclass(frozen=True)
class Power:
    """The ``underpowered`` flag, its reasons, and what would be needed, as one sentence."""

    underpowered: bool
    reasons: list[str]
    needed: str
    seeds_needed: int
    units_needed: int
    too_few: bool = False  # fewer than MIN_SEEDS seeds or MIN_UNITS units: too few to trust any verdict


def assess_power(
    n_seeds: int, ci: Sequence[float], min_effect: float, sd_delta: float, n_units: int, unit: str, utterances: int
) -> Power:
    """Underpowered when there are fewer than 5 seeds or the pooled CI is wider than the minimum
    effect of interest. What would be needed comes from ``_needed_sizes``."""
    width = float(ci[1] - ci[0])
    too_wide = width > min_effect + WER_SLACK  # a width equal to the minimum effect is not wider
    (shown_width,), shown_effect = beside([width], min_effect, tolerance=WER_SLACK)
    reasons = []
    if n_seeds < MIN_SEEDS:
        reasons.append(f"{counted(n_seeds, 'seed')} < {MIN_SEEDS}")
    if n_units < MIN_UNITS:
        reasons.append(f"{counted(n_units, 'held-out ' + unit)} < {MIN_UNITS}, too few to resample")
    if too_wide:
        reasons.append(f"the pooled 95% CI is {shown_width} points wide, wider than the minimum effect of {shown_effect} points")
    seeds_needed, units_needed = max(MIN_SEEDS, n_seeds), max(MIN_UNITS, n_units)
    if too_wide and min_effect > 0:
        seeds_needed, units_needed = _needed_sizes(n_seeds, width / Z_TWO_SIDED_WIDTH, min_effect / Z_TWO_SIDED_WIDTH, sd_delta, n_units)
        units_needed = max(MIN_UNITS, units_needed)
    if _out_of_reach(n_seeds, seeds_needed, n_units, units_needed):
        needs = [f"{_beyond(n_seeds, n_units, unit)}: a minimum effect this small is out of reach "
                 "(--min-effect or --min-effect-abs sets a larger one)"]
    else:
        needs = _needs(n_seeds, seeds_needed, n_units, units_needed, unit, utterances)
    if too_wide and min_effect <= 0:
        needs.append("a minimum effect above 0 in WER points (--min-effect-abs; the baseline WER is 0, so a relative one is 0)")
    target = (f"a pooled CI no wider than the minimum effect ({shown_effect} points)" if too_wide
              else "the seeds and held-out data the verdict trusts")
    needed = (f"Needed for {target}: " + " and ".join(needs) + ".") if needs else ""
    return Power(bool(reasons), reasons, needed, seeds_needed, units_needed, too_few=n_seeds < MIN_SEEDS or n_units < MIN_UNITS)


def _needs(n_seeds: int, seeds_needed: int, n_units: int, units_needed: int, unit: str, utterances: int) -> list[str]:
    """"at least 7 seeds (--trials 7)", "about 900 held-out utterances (now 240)": what to add."""
    needs = []
    if seeds_needed > n_seeds:
        needs.append(f"at least {seeds_needed} seeds (--trials {seeds_needed})")
    if units_needed > n_units:
        per_unit = utterances / max(n_units, 1)
        if unit == "speaker":
            needs.append(f"about {units_needed} held-out speakers (~{math.ceil(units_needed * per_unit)} utterances; now {n_units} speakers)")
        else:
            needs.append(f"about {units_needed} held-out utterances (now {n_units})")
    return needs


def _out_of_reach(n_seeds: int, seeds_needed: int, n_units: int, units_needed: int) -> bool:
    return seeds_needed > MAX_SCALE_UP * max(n_seeds, MIN_SEEDS) or units_needed > MAX_SCALE_UP * max(n_units, MIN_UNITS)


def _beyond(n_seeds: int, n_units: int, unit: str) -> str:
    return (f"more than {MAX_SCALE_UP} times the seeds or held-out {unit}s there are now "
            f"({counted(n_seeds, 'seed')}, {counted(n_units, unit)})")


def _needed_sizes(n_seeds: int, se_now: float, se_target: float, sd_delta: float, n_units: int) -> tuple[int, int]:
    """Seeds and held-out units that would shrink the standard error of the mean delta from
    ``se_now`` to ``se_target``. The variance splits into a seed part (sd of delta^2 / S, shrinks
    with more seeds) and a held-out part (the rest, shrinks ~1/n with more held-out units);
    seeds get at most half of the target variance, units the rest."""
    total, target = se_now**2, se_target**2
    seed_part = sd_delta**2 / max(n_seeds, 1)
    held_out_part = max(total - seed_part, 0.0)
    seeds = max(MIN_SEEDS, n_seeds)
    if sd_delta**2 / seeds > target / 2:
        seeds = math.ceil(2 * sd_delta**2 / target)
    room = target - sd_delta**2 / seeds
    units = max(n_units, math.ceil(n_units * held_out_part / room)) if held_out_part > 0 else n_units
    return seeds, units


# --------------------------------------------------------------------------- the whole analysis


@dataclass
class SeedResult:
    seed: int
    delta: float
    ci: list[float]
    poi: float
    baseline_wer: float
    tuned_wer: float
    errors_removed: int  # word errors fewer, summed over the utterances that got better
    errors_added: int  # word errors more, summed over the utterances that got worse
    utterances_better: int
    utterances_worse: int


@dataclass
class Analysis:
    """Everything verdict.json and report.md say about the primary eval set."""

    eval_set: str
    verdict: str
    verdict_rule: str  # which of VERDICT_RULES decided it
    power: Power
    mean_delta: float
    ci: list[float]
    poi: float
    sd_delta: float
    baseline_wer: float
    tuned_wer_mean: float
    tuned_wer_sd: float
    min_effect: float
    min_effect_relative: float | None
    seeds: list[SeedResult]
    unit: str
    units: int
    utterances: int
    ref_words: int
    dropped_empty: int
    resamples: int
    bootstrap_seed: int
    mean_draws: np.ndarray = field(repr=False)


def analyse(
    scores: PairedScores,
    resamples: int = 10_000,
    seed: int = 0,
    min_effect: float | None = None,
    min_effect_relative: float = 0.10,
) -> Analysis:
    """Bootstrap, verdict and power for one eval set.

    ``min_effect`` (absolute WER) wins over ``min_effect_relative`` (a share of the baseline WER).
    """
    if resamples < 100:
        raise ValueError(f"resamples: {resamples} is too few for a 95% interval; use at least 100 (default 10000)")
    draws = bootstrap(scores, resamples=resamples, seed=seed)
    deltas = scores.delta
    seeds = [_seed_result(scores, i, draws.per_seed[:, i]) for i in range(len(scores.seeds))]
    mean_delta, ci, poi = float(deltas.mean()), interval(draws.mean), probability_of_improvement(draws.mean)
    sd_delta = float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0
    baseline_wer = float(scores.baseline_wer.mean())
    relative = None if min_effect is not None else min_effect_relative
    effect = float(min_effect) if min_effect is not None else min_effect_relative * baseline_wer
    verdict, rule = decide_verdict(mean_delta, ci, poi, deltas, [s.ci for s in seeds])
    power = assess_power(len(seeds), ci, effect, sd_delta, draws.units, draws.unit, len(scores.ref_words))
    tuned = scores.tuned_wer
    return Analysis(
        eval_set=scores.eval_set, verdict=verdict, verdict_rule=rule, power=power, mean_delta=mean_delta, ci=ci, poi=poi,
        sd_delta=sd_delta, baseline_wer=baseline_wer, tuned_wer_mean=float(tuned.mean()),
        tuned_wer_sd=float(tuned.std(ddof=1)) if len(tuned) > 1 else 0.0, min_effect=effect,
        min_effect_relative=relative, seeds=seeds, unit=draws.unit, units=draws.units,
        utterances=len(scores.ref_words), ref_words=int(scores.ref_words.sum()), dropped_empty=scores.dropped_empty,
        resamples=resamples, bootstrap_seed=seed, mean_draws=draws.mean,
    )


def _seed_result(scores: PairedScores, i: int, draws: np.ndarray) -> SeedResult:
    """One seed's delta, CI, POI and the error counts behind it.

    Errors removed/added are net per utterance (an utterance with 3 errors fewer removes 3):
    the scores table keeps error counts, not alignments. The error analysis's "words fixed
    and broken" compare alignments word by word, so they count differently.
    """
    gap = scores.baseline_errors[i] - scores.tuned_errors[i]
    return SeedResult(
        seed=int(scores.seeds[i]), delta=float(scores.delta[i]), ci=interval(draws), poi=probability_of_improvement(draws),
        baseline_wer=float(scores.baseline_wer[i]), tuned_wer=float(scores.tuned_wer[i]),
        errors_removed=int(gap[gap > 0].sum()), errors_added=int(-gap[gap < 0].sum()),
        utterances_better=int((gap > 0).sum()), utterances_worse=int((gap < 0).sum()),
    )


# --------------------------------------------------------------------------- budgets: non-inferiority


@dataclass
class BudgetResult:
    """Whether a budgeted eval set's WER rose by no more than ``limit`` (tuned - baseline),
    decided over seeds and utterances; ``needed`` says what would settle an inconclusive one."""

    eval_set: str
    limit: float
    decision: str
    rise_mean: float
    lower_95: float
    upper_95: float
    seed_rises: list[float]
    seeds_over: int
    needed: str
    unit: str
    units: int
    utterances: int
    ref_words: int
    dropped_empty: int = 0  # utterances whose normalised reference is empty: not scored


def assess_budget(scores: PairedScores, limit: float, resamples: int = 10_000, seed: int = 0) -> BudgetResult:
    """A one-sided non-inferiority test of the rise r = tuned - baseline WER: the same
    two-level bootstrap as the gain (its draws with the sign flipped), bounds at the 5th and
    95th percentiles of the mean rise."""
    draws = bootstrap(scores, resamples=resamples, seed=seed)
    lower, upper = (float(bound) for bound in np.percentile(-draws.mean, [5, 95]))
    seed_rises = -scores.delta
    rise_mean = float(seed_rises.mean())
    decision = decide_budget(lower, upper, limit) if draws.units >= MIN_UNITS else "inconclusive"
    sd = float(seed_rises.std(ddof=1)) if len(seed_rises) > 1 else 0.0
    needed = ""
    if draws.units < MIN_UNITS:
        needed = f"Too few held-out {draws.unit}s to resample: at least {MIN_UNITS} (now {draws.units})."
    elif decision == "inconclusive":
        needed = _what_settles(rise_mean, lower, upper, limit, sd, len(seed_rises), draws.units, draws.unit, len(scores.ref_words))
    return BudgetResult(
        eval_set=scores.eval_set, limit=float(limit), decision=decision, rise_mean=rise_mean, lower_95=lower, upper_95=upper,
        seed_rises=[float(r) for r in seed_rises], seeds_over=int(sum(over_budget(r, limit) for r in seed_rises)),
        needed=needed, unit=draws.unit, units=draws.units, utterances=len(scores.ref_words), ref_words=int(scores.ref_words.sum()),
        dropped_empty=scores.dropped_empty,
    )


def decide_budget(lower: float, upper: float, limit: float) -> str:
    """within budget: the upper bound is at most the limit; over budget: the lower bound
    exceeds it; inconclusive: the bounds straddle it. Compared by the sweep's own rule."""
    if not over_budget(upper, limit):
        return "within budget"
    if over_budget(lower, limit):
        return "over budget"
    return "inconclusive"


def _what_settles(rise: float, lower: float, upper: float, limit: float, sd: float, n_seeds: int, n_units: int, unit: str, utterances: int) -> str:
    """Seeds or held-out units that would move the nearer bound past the limit, if the mean rise stays where it is."""
    gap = limit - rise
    if abs(gap) < 1e-12:
        return "The mean rise equals the limit: no amount of data settles it."
    half_width = upper - rise if gap > 0 else rise - lower
    seeds, units = _needed_sizes(n_seeds, half_width / Z_ONE_SIDED, abs(gap) / Z_ONE_SIDED, sd, n_units)
    if _out_of_reach(n_seeds, seeds, n_units, units):
        (distance,), _ = beside([abs(gap)], 0.0)
        return f"The mean rise is within {distance} points of the limit: settling it would take {_beyond(n_seeds, n_units, unit)}."
    needs = _needs(n_seeds, seeds, n_units, units, unit, utterances) or ["more seeds or held-out utterances"]
    toward = "within budget" if gap > 0 else "over budget"
    return f"To settle it ({toward} if the mean rise stays at {points(rise, sign=True)} points): " + " and ".join(needs) + "."


def plain_wers(table: Any, eval_set: str) -> dict[str, Any]:
    """Per-seed baseline and tuned WER of a secondary eval set (e.g. a source-domain canary),
    reported without statistics: the question there is only "did it get worse?". Utterances
    whose normalised reference is empty are dropped and counted; a set of nothing else has no WER."""
    rows = table[table["eval_set"] == eval_set]
    dropped = int(rows.loc[rows["ref_words"] == 0, "utterance_id"].nunique())
    return _per_seed_wers(table, eval_set, "errors", "ref_words") | {"dropped_empty_references": dropped}


def baselines_identical(table: Any, cached_seeds: Collection[int] = ()) -> dict[str, Any]:
    """Determinism check 1: the baseline (adapter off) does not depend on the seed, so every seed
    must produce the same baseline hypotheses. Returns the check and the utterances that differ.
    ``cached_seeds`` read their baseline from another run's decode (trainable.decode_cache), so
    they are left out: only seeds that decoded it themselves can disagree."""
    baselines = table[table["system"] == "baseline"]
    base = baselines[~baselines["seed"].isin(list(cached_seeds))]
    seeds = sorted(base["seed"].unique())
    if len(seeds) < 2:
        cached = baselines["seed"].isin(list(cached_seeds))
        why = (f"{baselines.loc[cached, 'seed'].nunique()} of {baselines['seed'].nunique()} seeds read their baseline "
               "from the decode cache, so fewer than 2 decoded it themselves" if cached.any() else "fewer than 2 seeds")
        return {"checked": False, "identical": None, "differing_utterances": [], "why": why}
    wide = base.pivot_table(index=["eval_set", "utterance_id"], columns="seed", values="hypothesis", aggfunc="first")
    differs = wide.nunique(axis=1, dropna=False) > 1
    examples = [f"{e}/{u}" for e, u in wide.index[differs.to_numpy()][:5]]
    return {"checked": True, "identical": not bool(differs.any()), "differing_utterances": examples, "count": int(differs.sum())}


def orthographic_wers(table: Any, eval_set: str) -> dict[str, Any] | None:
    """Per-seed WER that only lower-cases, beside the normalised one: a gain that shows only here
    is formatting (case, punctuation) learnt from the training transcripts, not recognition.
    None when the table lacks the optional orthographic columns (a hand-made table)."""
    if not {"orthographic_errors", "orthographic_ref_words"} <= set(table.columns):
        return None
    return _per_seed_wers(table, eval_set, "orthographic_errors", "orthographic_ref_words")


def character_error_rates(table: Any, eval_set: str) -> dict[str, Any] | None:
    """Per-seed CER on the normalised text, beside the WER: it tells near misses (one letter
    wrong) from words lost outright. None when the table lacks the optional character columns
    (a hand-made table, or one written before they existed)."""
    if not {"char_errors", "ref_chars"} <= set(table.columns):
        return None
    return _per_seed_wers(table, eval_set, "char_errors", "ref_chars", score="cer")


def _per_seed_wers(table: Any, eval_set: str, errors: str, words: str, score: str = "wer") -> dict[str, Any]:
    """Corpus error rate per seed and system from the ``errors`` and ``words`` columns."""
    rows = table[(table["eval_set"] == eval_set) & (table["ref_words"] > 0)]
    if rows.empty:  # every reference empty after normalisation: nothing to divide by
        return {"seeds": [], f"baseline_{score}": [], f"tuned_{score}": []}
    totals = rows.groupby(["seed", "system"])[[errors, words]].sum()
    rate = (totals[errors] / totals[words]).unstack("system")
    return {
        "seeds": [int(s) for s in rate.index],
        f"baseline_{score}": [float(v) for v in rate["baseline"]],
        f"tuned_{score}": [float(v) for v in rate["tuned"]],
    }
