"""Power of the findings' one-sided t-tests: what a "not determined" could have seen.

Every findings test (accuracy non-inferiority, drift below the ceiling, the empty-map share) rejects when
`(estimate - boundary) / se` passes the one-sided t quantile at `alpha` with the estimate's degrees of
freedom. For a true distance `effect` beyond the boundary in the tested direction, the statistic follows a
noncentral t with noncentrality `effect / se`, so

- `power(effect, se, df, alpha)` is the chance the test rejects, and
- `minimum_detectable_effect(se, df, alpha, 0.8)` (the MDE) is the smallest such distance it detects with
  80% power.

`se` is the study's own standard error of that test (over seeds, plus test-set noise for accuracies; the
jackknife over seeds for drift), so the MDE says what *this* study could have detected. The planning
helpers (`seeds_needed`, `images_needed`) scale those variance parts: seed variance with 1 / seeds,
test-set variance with 1 / test images. Checked against simulated studies with a planted effect equal to
the MDE (tests/test_power.py). Pure functions on numbers; scipy only.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

POWER = 0.8  # the power every MDE of the report is stated at
MAX_SEEDS = 1000  # planning answers above this are reported as "more than"


def _valid(se: float, df: float) -> bool:
    return bool(np.isfinite(se) and se > 0 and np.isfinite(df) and df > 0)


def power(effect: float, se: float, df: float, alpha: float) -> float:
    """Chance that a one-sided t-test at `alpha` rejects when the true distance beyond its boundary, in
    the tested direction, is `effect` (noncentral t with noncentrality effect / se)."""
    if not (_valid(se, df) and np.isfinite(effect)):
        return math.nan
    critical = float(stats.t.ppf(1 - alpha, df))
    return float(stats.nct.sf(critical, df, effect / se))


def minimum_detectable_effect(se: float, df: float, alpha: float, target: float = POWER) -> float:
    """The smallest true distance beyond the boundary that the one-sided t-test at `alpha` detects with
    power `target`; NaN without a standard error (fewer than 3 seeds, or seeds that agree exactly)."""
    if not _valid(se, df):
        return math.nan
    critical = float(stats.t.ppf(1 - alpha, df))

    def gap(noncentrality: float) -> float:
        return float(stats.nct.sf(critical, df, noncentrality)) - target

    high = critical + float(stats.norm.ppf(target)) + 1.0
    while gap(high) < 0:
        high *= 2
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-10)) * se


def satterthwaite(parts: list[tuple[float, float]]) -> tuple[float, float]:
    """(standard error, degrees of freedom) of a sum of variance parts [(variance, df)]."""
    total = sum(v for v, _ in parts)
    denominator = sum(v**2 / df for v, df in parts if v > 0 and df > 0)
    df = total**2 / denominator if denominator > 0 else math.nan
    return math.sqrt(total), df


def _seed_parts(
    seed_variance: float, seeds: int, image_variance: float, images: int
) -> list[tuple[float, float]]:
    """Variance parts of a mean over `seeds` seeds scored on `images` test images (as `inference.seed_mean`):
    `seed_variance` is the per-seed variance, `image_variance` the per-image variance of the seed mean."""
    parts = [(seed_variance / seeds, seeds - 1.0)]
    if image_variance > 0 and images > 1:
        parts.append((image_variance / images, images - 1.0))
    return parts


def seeds_needed(
    effect: float,
    seed_variance: float,
    alpha: float,
    image_variance: float = 0.0,
    images: int = 0,
    target: float = POWER,
) -> int | None:
    """The fewest seeds (at least 3) whose one-sided test detects `effect` with power `target`, for a
    per-seed variance `seed_variance` and (accuracies) a test-set variance part `image_variance / images`
    that more seeds do not shrink; None when not within MAX_SEEDS (the test-set part alone is too large)."""
    if not (np.isfinite(effect) and effect > 0 and np.isfinite(seed_variance)):
        return None
    for seeds in range(3, MAX_SEEDS + 1):
        se, df = satterthwaite(_seed_parts(seed_variance, seeds, image_variance, images))
        if not _valid(se, df) or power(effect, se, df, alpha) >= target:
            return seeds
    return None


def images_needed(
    effect: float,
    seed_variance: float,
    seeds: int,
    image_variance: float,
    alpha: float,
    target: float = POWER,
    max_images: int = 10**7,
) -> int | None:
    """The fewest test images with which `seeds` seeds detect `effect` with power `target`; None when the
    seed part alone leaves too little power (more seeds are needed, not more images)."""
    if not (np.isfinite(effect) and effect > 0 and seeds >= 3):
        return None
    if power(effect, math.sqrt(seed_variance / seeds), seeds - 1.0, alpha) < target:
        return None
    low, high = 2, max_images
    if power(effect, *satterthwaite(_seed_parts(seed_variance, seeds, image_variance, high)), alpha) < target:
        return None
    while low < high:  # power rises with the number of images
        middle = (low + high) // 2
        se, df = satterthwaite(_seed_parts(seed_variance, seeds, image_variance, middle))
        if power(effect, se, df, alpha) >= target:
            high = middle
        else:
            low = middle + 1
    return low


def power_fields(
    estimate: float, se: float, df: float, n: int, boundary: float, direction: int, alpha: float
) -> dict[str, float | int | None]:
    """The power of one one-sided test, for findings.json: `mde` (the distance beyond `boundary` in
    `direction`, +1 above or -1 below, detected with 80% power), `detectable` (the true value at which the
    test has 80% power: the boundary moved by the MDE), `power_at_estimate` (the power were the truth the
    estimate; NaN when the estimate lies on the null side) and `seeds_for_estimate` (seeds for 80% power
    there, taking the whole variance as seed variance: se**2 * n)."""
    mde = minimum_detectable_effect(se, df, alpha)
    distance = direction * (estimate - boundary)
    positive = bool(np.isfinite(distance) and distance > 0)
    at_estimate = power(distance, se, df, alpha) if positive else math.nan
    seeds = seeds_needed(distance, se**2 * n, alpha) if positive and np.isfinite(at_estimate) else None
    return {
        "power": POWER,
        "mde": mde,
        "detectable": boundary + direction * mde if np.isfinite(mde) else math.nan,
        "power_at_estimate": at_estimate,
        "seeds_for_estimate": seeds,
    }
