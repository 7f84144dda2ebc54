"""The honest-count parts of the findings: calibration bounds over distinct sets, correlation tests only
where the rounds allow one, identical metrics counted once, and empty maps as their own test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from helpers import SETTINGS
from ticketlens.analysis.associations import min_rounds_for_correlation, within_seed_correlations
from ticketlens.analysis.calibration import exact_upper, tcav_calibration, two_way_bootstrap_upper
from ticketlens.analysis.empty_maps import dense_pair_empty, empty_map_findings, empty_pair_columns
from ticketlens.report.correlation_text import attainable_rhos


def _cells(rates: dict[str, float], seeds: int = 4, tickets: int = 10, rows: int = 20) -> list[dict]:
    """Calibration cells: every set on every ticket, each set rejecting `rates[set]` of its rows."""
    cells = []
    for name, rate in rates.items():
        for seed in range(seeds):
            for t in range(tickets):
                rejected = int(round(rate * rows))
                cells.append({"seed": seed, "branch": "ticket", "round": t, "set": name, "rows": rows, "sets": 1,
                              "rejected_uncorrected": rejected, "rejected_gated": 0, "rejected_holm": 0,
                              "sets_flagged_holm": 0})  # fmt: skip
    return cells


def test_calibration_counts_distinct_sets_not_set_ticket_runs() -> None:
    cal = tcav_calibration(_cells({"cal_0": 0.0, "cal_1": 0.1}), 0.05)
    assert (cal["sets"], cal["distinct_sets"], cal["tickets"], cal["seeds"]) == (80, 2, 40, 4)
    assert cal["rate_uncorrected"] == pytest.approx(0.05)
    # A binomial bound over 1,600 rows would say about 6%; one of the two sets rejects 10% of its rows on
    # every ticket, and the bound over sets must reach it.
    assert cal["bootstrap_upper_99"] == pytest.approx(0.1)
    assert cal["distinct_sets_flagged_holm"] == 0 and cal["distinct_sets_flagged_upper_99"] == pytest.approx(
        0.9
    )


def test_the_bootstrap_bound_narrows_with_more_distinct_sets() -> None:
    few = tcav_calibration(_cells({"s0": 0.0, "s1": 0.1}), 0.05)
    many = tcav_calibration(_cells({f"s{i}": 0.1 * (i % 2) for i in range(40)}), 0.05)
    assert few["rate_uncorrected"] == many["rate_uncorrected"] == pytest.approx(0.05)
    assert many["bootstrap_upper_99"] < few["bootstrap_upper_99"]
    assert many["distinct_sets_flagged_upper_99"] < 0.15
    frame = pd.DataFrame(_cells({"a": 0.05, "b": 0.05}))
    assert two_way_bootstrap_upper(frame, "rejected_uncorrected") == pytest.approx(
        0.05
    )  # no spread, no width
    assert exact_upper(0, 2) == pytest.approx(1 - 0.01**0.5) and exact_upper(3, 3) == 1.0


def _rounds_table(rounds: int, seeds: int = 4) -> pd.DataFrame:
    """Accuracy and two consistency metrics that fall with every round (identical rankings)."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in range(seeds):
        for r in range(rounds + 1):
            noise = rng.normal(0, 0.01)
            rows.append({"seed": seed, "branch": "ticket", "round": r, "remaining_fraction": 0.5**r,
                         "test_accuracy": 0.95 - 0.02 * r + noise,
                         "cons_dense_gradcam_spearman": 1.0 - 0.1 * r, "cons_dense_gradcam_ssim": 0.9 - 0.05 * r,
                         "cons_dense_saliency_spearman": 1.0 - 0.1 * r + 0.3 * math.sin(3 * r + seed)})  # fmt: skip
    return pd.DataFrame(rows)


def test_no_correlation_test_below_the_rounds_that_allow_one() -> None:
    assert min_rounds_for_correlation(0.05) == 5 and attainable_rhos(3) == [-1.0, -0.5, 0.5, 1.0]
    rows = within_seed_correlations(_rounds_table(3), 0.05)
    assert all(r["kind"] == "descriptive" and math.isnan(r["p"]) and not r["significant"] for r in rows)
    tested = within_seed_correlations(_rounds_table(6), 0.05)
    assert all(r["kind"] == "exploratory" for r in tested)


def test_metrics_with_identical_per_seed_rho_are_one_test_in_holm() -> None:
    rows = {r["column"]: r for r in within_seed_correlations(_rounds_table(6), 0.05)}
    gradcam, ssim = rows["cons_dense_gradcam_spearman"], rows["cons_dense_gradcam_ssim"]
    assert ssim["same_as"] == "cons_dense_gradcam_spearman" and gradcam["same_as"] is None
    assert ssim["p_holm"] == gradcam["p_holm"] and gradcam["n_distinct"] == 2
    # Holm over the 2 distinct tests, not 3: the smaller p is multiplied by 2
    assert gradcam["p_holm"] == pytest.approx(
        min(1.0, 2 * min(gradcam["p"], rows["cons_dense_saliency_spearman"]["p"]))
    )


def test_empty_pairs_are_counted_against_the_ticket_and_its_dense_net() -> None:
    probes = [0, 1, 2, 3]
    own = pd.DataFrame({"probe": probes, "method": "gradcam", "empty": [True, False, False, False]})
    dense = pd.DataFrame({"probe": probes, "method": "gradcam", "empty": [False, True, False, False]})
    consistency = pd.DataFrame({"probe": probes, "method": "gradcam", "reference": "dense",
                                "spearman": [0.0, 0.0, 0.6, 0.8]})  # fmt: skip
    columns = empty_pair_columns(consistency, own, dense)
    assert columns["pairs_empty_gradcam"] == 0.5 and columns["nonempty_gradcam_spearman"] == pytest.approx(
        0.7
    )
    maps = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    emptied = maps.copy()
    emptied[0] = 0.0
    ceiling = dense_pair_empty({0: {"probe": np.arange(3), "gradcam": maps},
                                1: {"probe": np.arange(3), "gradcam": emptied}})  # fmt: skip
    assert ceiling["empty_share"].tolist() == [pytest.approx(1 / 3)]


def test_a_planted_excess_of_empty_maps_is_found_and_none_is_not() -> None:
    rng = np.random.default_rng(2)

    def study(excess: float) -> dict:
        seeds = 5
        rows = [{"seed": s, "branch": "ticket", "round": 1, "remaining_fraction": 0.3,
                 "pairs_empty_gradcam": float(np.clip(0.1 + excess + rng.normal(0, 0.03), 0, 1)),
                 "nonempty_gradcam_spearman": 0.5 + rng.normal(0, 0.03)} for s in range(seeds)]  # fmt: skip
        ceiling = pd.DataFrame([{"seed": a, "other_seed": b, "method": "gradcam",
                                 "empty_share": 0.1 + rng.normal(0, 0.02), "spearman": 0.5 + rng.normal(0, 0.02)}
                                for a in range(seeds) for b in range(a + 1, seeds)])  # fmt: skip
        (result,) = empty_map_findings(pd.DataFrame(rows), ceiling, SETTINGS)
        return result["per_round"][0]

    planted = [study(0.3)["empty_share"]["significant"] for _ in range(30)]
    null = [study(0.0)["empty_share"]["significant"] for _ in range(100)]
    assert np.mean(planted) >= 0.95 and np.mean(null) <= 0.1
    row = study(0.0)
    assert row["empty_share"]["power"]["mde"] > 0 and not row["nonempty_consistency"]["significant"]
