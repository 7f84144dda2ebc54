"""The statistics behind the findings: estimates over seeds with t-based intervals and one-sided tests,
kept inside the range the quantity can take, and the multiplicity procedures.

Seeds are the experimental unit: every estimate is a mean over seeds with a standard error over seeds
(plus, for accuracies, the noise of the finite test set); rounds and branches of one seed are never
treated as independent observations. Pure functions on numbers, so the findings can be checked on
simulated studies with known answers (tests/analysis/test_findings.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

MIN_SEEDS_FOR_TESTS = 3  # with 2 seeds a t-interval has 1 degree of freedom and a standard error of 1 value
MATCHES, FAILS, NOT_DETERMINED = "matches", "fails", "not determined"


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds: its standard error, degrees of freedom and an interval clipped to `bounds`."""

    estimate: float
    se: float
    df: float
    n: int
    ci_low: float
    ci_high: float
    level: float

    @property
    def testable(self) -> bool:
        return self.n >= MIN_SEEDS_FOR_TESTS and np.isfinite(self.se) and self.se > 0

    def p_below(self, threshold: float) -> float:
        """One-sided p of H0 `true value >= threshold` (small: significantly below the threshold)."""
        if not self.testable:
            return math.nan
        return float(stats.t.cdf((self.estimate - threshold) / self.se, self.df))

    def p_above(self, threshold: float) -> float:
        """One-sided p of H0 `true value <= threshold` (small: significantly above the threshold)."""
        if not self.testable:
            return math.nan
        return float(stats.t.sf((self.estimate - threshold) / self.se, self.df))

    def p_two_sided(self, value: float = 0.0) -> float:
        if not self.testable:
            return math.nan
        return float(2 * stats.t.sf(abs(self.estimate - value) / self.se, self.df))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(
    mean: float, se: float, df: float, n: int, level: float, bounds: tuple[float, float]
) -> Estimate:
    """A two-sided `level` t-interval around `mean`, clipped to `bounds`; none below 3 seeds."""
    if n < MIN_SEEDS_FOR_TESTS or not np.isfinite(se) or not np.isfinite(mean):
        return Estimate(mean, se, df, n, math.nan, math.nan, level)
    # Seeds that agree exactly give a zero-width interval (and no test: `Estimate.testable`).
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se if se > 0 else 0.0
    low, high = np.clip([mean - half, mean + half], *bounds)
    return Estimate(mean, se, df, n, float(low), float(high), level)


def satterthwaite_df(parts: Sequence[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of variance estimates [(variance, df)] (Welch-Satterthwaite)."""
    total = sum(v for v, _ in parts)
    denominator = sum(v**2 / df for v, df in parts if v > 0 and df > 0)
    return total**2 / denominator if denominator > 0 else math.nan


def seed_mean(
    per_seed: Sequence[float],
    level: float,
    bounds: tuple[float, float],
    image_outcomes: np.ndarray | None = None,
) -> Estimate:
    """Mean over seeds of a per-seed value (an accuracy, or a paired difference of two of them).

    `image_outcomes` (seeds x test images; e.g. correct minus correct for a difference) adds the noise of
    the finite test set, which the seed-to-seed spread misses because every seed is scored on the same
    images: the variance is var_seeds / n + var_images(mean over seeds) / N, with Satterthwaite degrees
    of freedom. The seed x image interaction is counted in both terms, so the interval is conservative.
    """
    values = np.asarray([v for v in per_seed if v is not None and np.isfinite(v)], dtype=float)
    n = len(values)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, math.nan, math.nan, level)
    mean = float(values.mean())
    if n < 2:
        return estimate(mean, math.nan, math.nan, n, level, bounds)
    parts = [(float(values.var(ddof=1)) / n, n - 1.0)]
    if image_outcomes is not None and np.asarray(image_outcomes).size:
        per_image = np.asarray(image_outcomes, dtype=float).mean(axis=0)
        if len(per_image) > 1:
            parts.append((float(per_image.var(ddof=1)) / len(per_image), len(per_image) - 1.0))
    se = math.sqrt(sum(v for v, _ in parts))
    return estimate(mean, se, satterthwaite_df(parts), n, level, bounds)


def jackknife(
    statistic: Callable[[list[int]], float], seeds: list[int], level: float, bounds: tuple[float, float]
) -> Estimate:
    """`statistic(seeds)` with the delete-one-seed jackknife standard error and n - 1 degrees of freedom."""
    n = len(seeds)
    full = statistic(seeds) if n >= 2 else math.nan
    if n < MIN_SEEDS_FOR_TESTS:
        return estimate(full, math.nan, math.nan, n, level, bounds)
    leave_one_out = np.array([statistic([s for s in seeds if s != j]) for j in seeds])
    se = math.sqrt((n - 1) / n * float(((leave_one_out - leave_one_out.mean()) ** 2).sum()))
    return estimate(full, se, n - 1.0, n, level, bounds)


def _pair_mean(pairs: dict[tuple[int, int], float], kept: list[int]) -> float:
    values = [v for (a, b), v in pairs.items() if a in kept and b in kept and np.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def pair_mean(pairs: dict[tuple[int, int], float], level: float, bounds: tuple[float, float]) -> Estimate:
    """Mean over seed pairs (the dense seed-to-seed ceiling), jackknifed over seeds: pairs share seeds."""
    seeds = sorted({s for pair in pairs for s in pair})
    return jackknife(lambda kept: _pair_mean(pairs, kept), seeds, level, bounds)


def difference_from_ceiling(
    values: dict[int, float], pairs: dict[tuple[int, int], float], level: float, bounds: tuple[float, float]
) -> Estimate:
    """Mean over seeds of `values` (a ticket's consistency with its own dense net) minus the mean over
    seed pairs of `pairs` (dense net vs dense net of another seed, the ceiling).

    The pair values share seeds, so a per-seed paired t-test would understate their variance; the
    standard error is the delete-one-seed jackknife of the whole difference, with n - 1 degrees of
    freedom (calibrated on simulated studies in tests/analysis/test_findings.py).
    """
    seeds = sorted(s for s, v in values.items() if np.isfinite(v))

    def difference(kept: list[int]) -> float:
        return float(np.mean([values[s] for s in kept])) - _pair_mean(pairs, kept)

    return jackknife(difference, seeds, level, bounds)


def verdict(est: Estimate, margin: float, alpha: float) -> str:
    """Non-inferiority at `-margin`: "matches" when significantly above it, "fails" when significantly
    below it (each a one-sided test at alpha), otherwise (or without a test) "not determined"."""
    if est.p_above(-margin) < alpha:
        return MATCHES
    if est.p_below(-margin) < alpha:
        return FAILS
    return NOT_DETERMINED


def onset(verdicts: dict[int, str]) -> tuple[int, int | None]:
    """(last round established to match, first round of the failing run) by fixed-sequence testing.

    Pruning only removes weights, so hypotheses come in a natural order: matching is tested from the
    first round forwards and stops at the first round that is not shown to match; failing is tested from
    the last round backwards and stops at the first round that is not shown to fail. Each sequence keeps
    its familywise error at alpha without a correction. Round 0 (the reference itself) always matches.
    """
    rounds = sorted(verdicts)
    last_matching = 0
    for r in rounds:
        if verdicts[r] != MATCHES:
            break
        last_matching = r
    first_failing = None
    for r in reversed(rounds):
        if verdicts[r] != FAILS:
            break
        first_failing = r
    return last_matching, first_failing


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (NaN stays NaN and does not count towards the family size)."""
    p = np.asarray(p_values, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(len(p), math.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
