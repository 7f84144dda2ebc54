"""The TCAV test's calibration on the study itself: held-out random image sets run as concepts on every
ticket, pooled per dataset, with an interval that respects how those rows depend on each other.

The same few calibration sets (`explanations.tcav.n_calibration_sets`, drawn once per dataset) are run on
every ticket, so rows are not independent: rows of one set share its images on every ticket, rows of one
seed share its nets. A binomial bound over rows would count each set once per ticket and layer-class row;
here the unit is the (distinct set, seed) cell, and the upper bound is a two-way (pigeonhole) bootstrap
that resamples distinct sets and seeds independently (Owen 2007), plus an exact bound on the share of
distinct sets flagged anywhere. With few distinct sets the bounds are wide, and the findings say so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ticketlens.explanations.tcav_stats import calibration_rates, calibration_summary

BOOTSTRAP_DRAWS = 4000
LEVEL = 0.99
COUNTS = ("rows", "rejected_uncorrected", "rejected_gated", "rejected_holm")


def calibration_cells(concept_rows: pd.DataFrame, calibration_rows: pd.DataFrame, alpha: float) -> list[dict]:
    """One ticket's calibration counts per calibration set (`tcav_stats.calibration_rates` of each set,
    judged with the ticket's concepts), each with the set's name under `set`."""
    return [
        {"set": str(name), **calibration_rates(concept_rows, rows, alpha)}
        for name, rows in calibration_rows.groupby("concept", sort=True)
    ]


def two_way_bootstrap_upper(cells: pd.DataFrame, column: str, level: float = LEVEL) -> float:
    """Upper `level` percentile of the pooled rate column / rows when distinct sets and seeds are resampled
    independently with replacement (fixed generator: the same cells give the same bound)."""
    table = cells.groupby(["set", "seed"])[[column, "rows"]].sum()
    hits = table[column].unstack(fill_value=0).to_numpy(float)
    rows = table["rows"].unstack(fill_value=0).to_numpy(float)
    if rows.sum() == 0:
        return float("nan")
    rng = np.random.default_rng(0)
    n_sets, n_seeds = hits.shape
    set_weights = rng.multinomial(n_sets, np.full(n_sets, 1 / n_sets), BOOTSTRAP_DRAWS)
    seed_weights = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), BOOTSTRAP_DRAWS)
    numerator = np.einsum("bi,ij,bj->b", set_weights, hits, seed_weights)
    denominator = np.einsum("bi,ij,bj->b", set_weights, rows, seed_weights)
    rates = numerator[denominator > 0] / denominator[denominator > 0]
    return float(np.quantile(rates, level))


def exact_upper(successes: int, trials: int, level: float = LEVEL) -> float:
    """One-sided Clopper-Pearson upper bound of a share (1 when every trial succeeded)."""
    if trials == 0:
        return float("nan")
    return 1.0 if successes >= trials else float(stats.beta.ppf(level, successes + 1, trials - successes))


def tcav_calibration(cells: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """The dataset's TCAV calibration (findings.json): pooled counts and rates over every ticket x set
    (`sets` counts set-ticket runs), the number of distinct sets and seeds they come from, the two-way
    bootstrap upper 99% bound of the uncorrected rate, and the exact bound on distinct sets flagged."""
    frame = pd.DataFrame(cells)
    pooled = calibration_summary([{k: c[k] for k in c if k not in ("set", "seed", "branch", "round")}
                                  for c in cells])  # fmt: skip
    out: dict[str, Any] = {**pooled, "alpha": alpha}
    if frame.empty or not pooled.get("rows"):
        return out | {"distinct_sets": 0}
    flagged = frame.groupby("set")["sets_flagged_holm"].max()
    out.update(
        {
            "distinct_sets": int(frame["set"].nunique()),
            "seeds": int(frame["seed"].nunique()),
            "tickets": int(frame[["seed", "branch", "round"]].drop_duplicates().shape[0]),
            "bootstrap_upper_99": two_way_bootstrap_upper(frame, "rejected_uncorrected"),
            "distinct_sets_flagged_holm": int((flagged > 0).sum()),
            "distinct_sets_flagged_upper_99": exact_upper(int((flagged > 0).sum()), int(len(flagged))),
            "interval": (
                f"two-way bootstrap over distinct sets and seeds ({BOOTSTRAP_DRAWS} draws, upper "
                f"{100 * LEVEL:g}%); rows of one set or one seed are not independent"
            ),
            "correction": "Holm per ticket over concepts x layers x classes, each calibration set as one more concept",
            "learnability": "CAV held-out accuracy above its permutation null's (one-sided rank test at alpha)",
        }
    )
    return out
