"""The findings as tests, on simulated studies whose answers are known.

A simulated study has seeds x rounds of tickets whose accuracy (per test image) and consistency with their
own dense net are drawn around planted true values, and dense-vs-dense consistencies (the ceiling) that
share seeds as the real ones do. Where nothing changes, the "fails" and "drift" verdicts may fire at most
at rate alpha (asserted with a binomial tolerance over many studies); planted changes must be found, and
"before" must be said only when both onsets are determined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from helpers import SETTINGS
from ticketlens.analysis import inference
from ticketlens.analysis.findings import accuracy_match, drift_onsets
from ticketlens.study import FindingsSettings

COLUMN = "cons_dense_gradcam_spearman"
STUDIES = 200


def binomial_ceiling(alpha: float, studies: int) -> float:
    """alpha plus three binomial standard errors: a calibrated test stays below this but by chance."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / studies)


@dataclass(frozen=True)
class Truth:
    """The planted answers of a simulated study (differences to the dense net / to the ceiling per round)."""

    seeds: int = 3
    rounds: int = 5
    images: int = 2000
    dense_accuracy: float = 0.9
    accuracy_shift: dict[int, float] = field(default_factory=dict)  # round -> true accuracy difference
    ceiling: float = 0.6  # true dense seed-to-seed consistency
    drift: dict[int, float] = field(default_factory=dict)  # round -> true consistency minus the ceiling
    training_sd: float = 0.004  # accuracy noise of one training run (a ticket is a fresh run)
    image_noise: float = 0.01  # small: nets agree on which test images are hard, as they do
    dense_sd: float = 0.03  # a dense net's own effect on every pair it is in
    pair_sd: float = 0.03
    ticket_sd: float = 0.03


def _correct(rng: np.random.Generator, difficulty: np.ndarray, noise: float, p: float) -> np.ndarray:
    """An image is classified correctly when its difficulty (plus noise) is below p: accuracy about p."""
    return difficulty + rng.normal(0, noise, len(difficulty)) < p


def simulate(truth: Truth, rng: np.random.Generator) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """(summary rows of the ticket branch, per-ticket test outcomes, the ceiling's seed pairs)."""
    difficulty = rng.random(truth.images)
    effects = rng.normal(0, truth.dense_sd, truth.seeds)
    rows, outcomes = [], {}
    for seed in range(truth.seeds):
        level = truth.dense_accuracy + rng.normal(0, truth.training_sd)  # shared by the seed's tickets
        for r in range(truth.rounds + 1):
            run_level = level + truth.accuracy_shift.get(r, 0.0) + rng.normal(0, truth.training_sd)
            correct = _correct(rng, difficulty, truth.image_noise, run_level)
            outcomes[(seed, "ticket", r)] = correct
            consistency = (
                truth.ceiling + truth.drift.get(r, 0.0) + effects[seed] + rng.normal(0, truth.ticket_sd)
            )
            rows.append(
                {
                    "seed": seed,
                    "branch": "ticket",
                    "round": r,
                    "remaining_fraction": 0.8**r,
                    "test_accuracy": float(correct.mean()),
                    COLUMN: 1.0 if r == 0 else consistency,
                }
            )
    pairs = [
        {
            "seed": a,
            "other_seed": b,
            "method": "gradcam",
            "spearman": truth.ceiling + effects[a] + effects[b] + rng.normal(0, truth.pair_sd),
        }
        for a in range(truth.seeds)
        for b in range(a + 1, truth.seeds)
    ]
    return pd.DataFrame(rows), outcomes, pd.DataFrame(pairs)


def run(truth: Truth, seed: int, settings: FindingsSettings = SETTINGS) -> tuple[dict, dict]:
    summary, outcomes, ceiling = simulate(truth, np.random.default_rng(seed))
    match = accuracy_match(summary, settings, outcomes)
    (drift,) = drift_onsets(summary, ceiling, match, settings)
    return match, drift


def rates(truth: Truth, studies: int = STUDIES) -> tuple[float, float]:
    """Share of simulated studies with a failing round, and with a drift onset."""
    results = [run(truth, seed) for seed in range(studies)]
    fails = np.mean([m["first_failing_round"] is not None for m, _ in results])
    drifts = np.mean([d["first_drift_round"] is not None for _, d in results])
    return float(fails), float(drifts)


# ----------------------------------------------------------------------------------- calibration


def test_no_true_change_rarely_fails_or_drifts() -> None:
    """Tickets exactly as accurate as their dense net and exactly as close as another dense seed is."""
    fails, drifts = rates(Truth())
    limit = binomial_ceiling(SETTINGS.alpha, STUDIES)
    assert fails <= limit and drifts <= limit, (fails, drifts)


def test_change_exactly_at_the_margin_is_called_at_most_at_rate_alpha() -> None:
    """The hardest null: the true accuracy drop equals the margin at every round, on a small test set whose
    sampling noise the seeds share (as synthbirds' 180 test images); and, with a pair effect larger than
    the ticket noise, the ceiling's shared seeds matter most."""
    margin = SETTINGS.accuracy_margin
    truth = Truth(
        images=300,
        training_sd=0.001,
        image_noise=0.001,
        accuracy_shift={r: -margin for r in range(1, 6)},
        pair_sd=0.08,
        ticket_sd=0.01,
        dense_sd=0.0,
    )
    fails, drifts = rates(truth)
    limit = binomial_ceiling(SETTINGS.alpha, STUDIES)
    assert fails <= limit and drifts <= limit, (fails, drifts)


# ---------------------------------------------------------------------------------- known answers


def test_planted_accuracy_drop_at_round_4_is_found() -> None:
    truth = Truth(seeds=5, images=5000, training_sd=0.002, accuracy_shift={4: -0.08, 5: -0.12})
    found = [run(truth, seed)[0] for seed in range(40)]
    onsets = [(m["last_matching_round"], m["first_failing_round"]) for m in found]
    assert np.mean([o == (3, 4) for o in onsets]) >= 0.9, onsets
    match = found[0]
    row = {r["round"]: r for r in match["per_round"]}[4]
    assert row["verdict"] == "fails" and row["ci_high"] < -SETTINGS.accuracy_margin
    assert row["ci_low"] >= -1.0 and match["dense_ci_low"] >= 0.0 and match["dense_ci_high"] <= 1.0


def test_planted_drift_before_the_accuracy_drop_is_called_before() -> None:
    truth = Truth(
        seeds=5,
        images=5000,
        accuracy_shift={4: -0.08, 5: -0.12},
        drift={1: 0.25, 2: -0.2, 3: -0.3, 4: -0.4, 5: -0.5},
    )
    results = [run(truth, seed) for seed in range(30)]
    assert np.mean([d["relation"] == "before" for _, d in results]) >= 0.8
    for match, d in results:
        if d["relation"] == "before":
            # drift is established at a round where tickets are still established to match
            assert d["first_drift_round"] <= match["last_matching_round"] and d["lag_rounds"][1] < 0


def test_before_is_never_said_when_the_accuracy_onset_is_not_determined() -> None:
    """Drift is planted, accuracy never changes: drift is found, but its relation is not determined."""
    truth = Truth(seeds=5, drift={r: -0.4 for r in range(2, 6)})
    drifts = [run(truth, seed)[1] for seed in range(30)]
    assert np.mean([d["first_drift_round"] == 2 for d in drifts]) >= 0.8
    assert all(d["relation"] == inference.NOT_DETERMINED for d in drifts), {d["relation"] for d in drifts}


def test_a_metric_that_never_falls_is_not_drifted_in_the_rounds_run() -> None:
    truth = Truth(seeds=5, accuracy_shift={4: -0.08, 5: -0.12}, drift={r: 0.3 for r in range(1, 6)})
    match, drift = run(truth, 0)
    assert match["first_failing_round"] == 4
    assert drift["first_drift_round"] is None and drift["relation"] == "not drifted in the rounds run"
    assert drift["last_not_drifted_round"] == 5


def test_fewer_than_three_seeds_give_numbers_only() -> None:
    match, drift = run(Truth(seeds=2, accuracy_shift={4: -0.3, 5: -0.3}, drift={4: -0.5, 5: -0.5}), 0)
    assert match["first_failing_round"] is None and "numbers only" in match["test"]
    assert all(r["verdict"] == "not determined" and math.isnan(r["ci_low"]) for r in match["per_round"])
    assert all(math.isnan(r["p_fails"]) for r in match["per_round"])
    assert drift["first_drift_round"] is None and math.isnan(drift["ceiling_ci_low"])


# ------------------------------------------------------------------------------------ machinery


def test_intervals_never_leave_the_range() -> None:
    est = inference.seed_mean([0.999, 1.0, 0.97], 0.95, (0.0, 1.0))
    assert est.ci_high == 1.0 and est.ci_low >= 0.0
    rho = inference.seed_mean([0.9, -0.9, 1.0], 0.95, (-1.0, 1.0))
    assert rho.ci_low == -1.0 and rho.ci_high == 1.0


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ({1: "matches", 2: "matches", 3: "fails", 4: "fails"}, (2, 3)),
        ({1: "matches", 2: "not determined", 3: "matches", 4: "fails"}, (1, 4)),
        ({1: "fails", 2: "matches", 3: "fails"}, (0, 3)),  # a failing round before a match does not count
        ({1: "not determined", 2: "not determined"}, (0, None)),
    ],
)
def test_fixed_sequence_onsets(verdicts: dict[int, str], expected: tuple[int, int | None]) -> None:
    assert inference.onset(verdicts) == expected


def test_holm_adjusts_in_order_and_skips_missing_p_values() -> None:
    adjusted = inference.holm([0.01, float("nan"), 0.04, 0.03])
    assert adjusted[0] == pytest.approx(0.03) and math.isnan(adjusted[1])
    assert adjusted[3] == pytest.approx(0.06) and adjusted[2] == pytest.approx(0.06)


def test_an_undetectable_drift_is_not_determined_never_no_drift_and_states_its_mde() -> None:
    """A true drop of 0.01 below the ceiling with 3 seeds: mostly not found. Absence of evidence must read
    "not determined" with what the study could detect, never "not drifted in the rounds run"."""
    truth = Truth(seeds=3, drift={r: -0.01 for r in range(1, 6)})
    undecided = 0
    for seed in range(20):
        _, drift = run(truth, seed)
        verdicts = [r["verdict"] for r in drift["per_round"]]
        if drift["relation"] == "not drifted in the rounds run":
            assert verdicts == ["not drifted"] * 5
        if drift["first_drift_round"] is None and "not determined" in verdicts:
            assert drift["relation"] == inference.NOT_DETERMINED
            undecided += 1
        for row in drift["per_round"]:
            mde = row["drift_power"]["mde"]
            assert 0 < mde < 1 and row["drift_power"]["detectable"] == pytest.approx(-mde)
    assert undecided >= 10
