"""The minimum detectable effect against simulation: studies with a planted effect equal to the MDE must
be rejected by the findings' own test about 80% of the time, and a normal-quantile MDE (the broken variant
that ignores the few seeds' t distribution) must visibly miss that."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ticketlens.analysis import inference, power

ALPHA = 0.05
SIMULATIONS = 4000
TOLERANCE = 0.03  # 4,000 simulated studies: the rate's standard error at 80% is 0.0063


def _fails_rate(effect: float, sd: float, seeds: int, margin: float, rng: np.random.Generator) -> float:
    """Share of simulated accuracy studies (per-seed paired differences) that the findings call "fails"."""
    truth = -margin - effect
    calls = [
        inference.verdict(
            inference.seed_mean(list(rng.normal(truth, sd, seeds)), 0.9, (-1, 1)), margin, ALPHA
        )
        for _ in range(SIMULATIONS)
    ]
    return calls.count(inference.FAILS) / SIMULATIONS


@pytest.mark.parametrize("seeds", [3, 4, 8])
def test_a_planted_effect_equal_to_the_mde_is_found_in_80_percent_of_studies(seeds: int) -> None:
    rng = np.random.default_rng(seeds)
    sd, margin = 0.02, 0.01
    mde = power.minimum_detectable_effect(sd / math.sqrt(seeds), seeds - 1.0, ALPHA)
    assert abs(_fails_rate(mde, sd, seeds, margin, rng) - power.POWER) < TOLERANCE
    assert power.power(mde, sd / math.sqrt(seeds), seeds - 1.0, ALPHA) == pytest.approx(power.POWER, abs=1e-6)


def test_a_normal_quantile_mde_is_seen_to_be_wrong_by_the_same_simulation() -> None:
    """The broken variant: (z_alpha + z_power) * se. With 3 seeds it is far too optimistic."""
    rng = np.random.default_rng(7)
    sd, seeds, margin = 0.02, 3, 0.01
    broken = (stats.norm.ppf(1 - ALPHA) + stats.norm.ppf(power.POWER)) * sd / math.sqrt(seeds)
    assert broken < power.minimum_detectable_effect(sd / math.sqrt(seeds), seeds - 1.0, ALPHA)
    assert _fails_rate(broken, sd, seeds, margin, rng) < power.POWER - 4 * TOLERANCE


def _drift_study(effect: float, seeds: int, rng: np.random.Generator) -> inference.Estimate:
    """One simulated drift study: seed effects shared by a ticket's value and every dense pair of its seed."""
    dense = rng.normal(0.0, 0.04, seeds)
    values = {s: 0.5 - effect + dense[s] + rng.normal(0, 0.05) for s in range(seeds)}
    pairs = {
        (a, b): 0.5 + (dense[a] + dense[b]) / 2 + rng.normal(0, 0.02)
        for a in range(seeds)
        for b in range(a + 1, seeds)
    }
    return inference.difference_from_ceiling(values, pairs, 0.9, (-2, 2))


def test_the_drift_mde_holds_for_the_jackknifed_difference_from_the_ceiling() -> None:
    """The drift test's standard error is a jackknife: calibrate the MDE on its simulated sampling spread."""
    rng = np.random.default_rng(3)
    seeds = 5
    null = np.array([_drift_study(0.0, seeds, rng).estimate for _ in range(SIMULATIONS)])
    mde = power.minimum_detectable_effect(float(null.std(ddof=1)), seeds - 1.0, ALPHA)
    calls = [
        inference.verdict(_drift_study(mde, seeds, rng), 0.0, ALPHA) == inference.FAILS
        for _ in range(SIMULATIONS)
    ]
    assert abs(np.mean(calls) - power.POWER) < 2 * TOLERANCE


def test_seeds_needed_is_the_first_seed_count_with_80_percent_power() -> None:
    sd, effect = 0.02, 0.02
    seeds = power.seeds_needed(effect, sd**2, ALPHA)
    assert seeds is not None and seeds > 3
    assert power.power(effect, sd / math.sqrt(seeds), seeds - 1.0, ALPHA) >= power.POWER
    assert power.power(effect, sd / math.sqrt(seeds - 1), seeds - 2.0, ALPHA) < power.POWER
    rng = np.random.default_rng(11)
    assert abs(_fails_rate(effect, sd, seeds, 0.0, rng) - power.POWER) < 0.06  # at or just above 80%


def test_test_images_help_only_until_the_seed_variance_dominates() -> None:
    seed_variance, image_variance = 1e-4, 0.1
    images = power.images_needed(0.02, seed_variance, 4, image_variance, ALPHA)
    assert images is not None
    se, df = power.satterthwaite([(seed_variance / 4, 3.0), (image_variance / images, images - 1.0)])
    assert power.power(0.02, se, df, ALPHA) >= power.POWER
    assert power.images_needed(0.002, seed_variance, 4, image_variance, ALPHA) is None  # seeds, not images
    assert power.seeds_needed(0.02, 1e-4, ALPHA, image_variance=10.0, images=100) is None


def test_power_fields_state_the_mde_in_the_tested_direction() -> None:
    fields = power.power_fields(-0.05, 0.03, 3.0, 4, 0.0, -1, ALPHA)
    assert fields["mde"] > 0 and fields["detectable"] == pytest.approx(-fields["mde"])
    assert 0 < fields["power_at_estimate"] < power.POWER
    assert fields["seeds_for_estimate"] > 4
    null_side = power.power_fields(0.05, 0.03, 3.0, 4, 0.0, -1, ALPHA)
    assert math.isnan(null_side["power_at_estimate"]) and null_side["seeds_for_estimate"] is None
    assert math.isnan(power.power_fields(-0.05, math.nan, math.nan, 2, 0.0, -1, ALPHA)["mde"])
