"""The findings that compare branches or relate two measures: control gaps at equal sparsity (paired over
seeds), the exploratory within-seed correlation of accuracy change with consistency, and the concepts that
lose or gain TCAV significance relative to the dense net.

Seeds are the unit of every test here: a control is paired with the ticket of the same seed and round, and
a correlation is computed within each seed (across its rounds) before the seeds are combined, so seeds x
rounds are never pooled as if independent. Holm controls each family of tests.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ticketlens.analysis import inference
from ticketlens.analysis.tables import (
    add_accuracy_change,
    column_bounds,
    consistency_columns_of,
    dense_rows,
    split_consistency_column,
)
from ticketlens.explanations.tcav_stats import KEYS as TCAV_KEY
from ticketlens.study import DENSE_ROUND, TICKET

Outcomes = dict[tuple[int, str, int], np.ndarray]
TCAV_GAP_COLUMNS = ("tcav_rank_corr_dense", "tcav_jaccard_dense")


# ----------------------------------------------------------------------------------- control gaps


def paired_gap(
    control: pd.Series,
    ticket: pd.Series,
    bounds: tuple[float, float],
    image_outcomes: np.ndarray | None = None,
) -> dict[str, Any]:
    """Control minus ticket over seeds paired by index: mean gap, 95% interval and a two-sided t-test."""
    pairs = pd.concat([control.rename("c"), ticket.rename("t")], axis=1).dropna()
    width = bounds[1] - bounds[0]
    est = inference.seed_mean((pairs["c"] - pairs["t"]).tolist(), 0.95, (-width, width), image_outcomes)
    if est.n < inference.MIN_SEEDS_FOR_TESTS:
        test = f"no test: {est.n} seed(s) (a test needs at least 3)"
    elif not est.testable:
        test = "no test: the same gap in every seed"
    else:
        test = "paired t-test over seeds" + (" with test-set noise" if image_outcomes is not None else "")
    return {
        "mean_gap": est.estimate,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "n": est.n,
        "p": est.p_two_sided(),
        "test": test,
    }


def _gap_outcomes(
    outcomes: Outcomes | None, control: str, r: int, seeds: list[int], column: str
) -> np.ndarray | None:
    """Seeds x test images of correct(control) - correct(ticket), for accuracy gaps only."""
    if column != "test_accuracy" or not outcomes:
        return None
    keys = [((s, control, r), (s, TICKET, r)) for s in seeds]
    if any(a not in outcomes or b not in outcomes for a, b in keys):
        return None
    rows = [outcomes[a].astype(float) - outcomes[b].astype(float) for a, b in keys]
    return np.stack(rows) if len({len(row) for row in rows}) == 1 else None


def control_gaps(
    summary: pd.DataFrame, columns: list[str], alpha: float, outcomes: Outcomes | None = None
) -> list[dict[str, Any]]:
    """How each control differs from the ticket at equal round (equal sparsity), per metric and round,
    Holm-corrected per metric over controls x rounds."""
    out = []
    tickets = summary[summary["branch"] == TICKET].set_index(["round", "seed"])
    for control in [b for b in summary["branch"].unique() if b != TICKET]:
        rows = summary[summary["branch"] == control].set_index(["round", "seed"])
        for r in sorted(rows.index.get_level_values("round").unique()):
            if r not in tickets.index.get_level_values("round"):
                continue
            for column in [c for c in columns if c in rows]:
                ticket, other = tickets.loc[r, column], rows.loc[r, column]
                seeds = sorted(int(s) for s in set(ticket.index) & set(other.index))
                image = _gap_outcomes(outcomes, control, int(r), seeds, column)
                gap = paired_gap(other.loc[seeds], ticket.loc[seeds], column_bounds(column), image)
                remaining = float(tickets.loc[r, "remaining_fraction"].mean())
                out.append(
                    {"control": control, "round": int(r), "remaining": remaining, "metric": column, **gap}
                )
    for column in columns:
        family = [g for g in out if g["metric"] == column]
        for gap, p_holm in zip(family, inference.holm([g["p"] for g in family]), strict=True):
            gap["p_holm"] = p_holm
            gap["significant"] = bool(np.isfinite(p_holm) and p_holm < alpha)
    return out


def gap_columns(summary: pd.DataFrame) -> list[str]:
    columns = ["test_accuracy", *consistency_columns_of(summary)]
    return columns + [c for c in TCAV_GAP_COLUMNS if c in summary]


# ----------------------------------------------------------------------------------- correlations


def seed_rank_correlation(x: pd.Series, y: pd.Series) -> float:
    """Spearman rho of one seed's rounds; NaN below 3 points or where a side is constant."""
    mask = x.notna() & y.notna()
    x, y = x[mask].to_numpy(float), y[mask].to_numpy(float)
    if len(x) < 3 or np.ptp(x) <= 1e-12 or np.ptp(y) <= 1e-12:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def min_rounds_for_correlation(alpha: float) -> int:
    """The fewest rounds per seed whose Spearman rho can be significant on its own: the exact two-sided
    permutation p of k points is at least 2 / k!, so k must satisfy 2 / k! < alpha (5 at alpha 0.05).
    With fewer, rho takes a handful of values (3 rounds: +-0.5 or +-1) and no test is meaningful."""
    k = 2
    while 2 / math.factorial(k) >= alpha:
        k += 1
    return k


def _identical_groups(rows: list[dict[str, Any]]) -> list[int]:
    """Per row, the index of the first row with the same per-seed rho (metrics that rank rounds the same)."""
    first: dict[tuple, int] = {}
    keys = [tuple(sorted((s, round(v, 12)) for s, v in row["per_seed_rho"].items())) for row in rows]
    return [first.setdefault(key, i) for i, key in enumerate(keys)]


def within_seed_correlations(summary: pd.DataFrame, alpha: float) -> list[dict[str, Any]]:
    """Exploratory: within each seed, Spearman rho across pruned ticket rounds of the accuracy change (vs
    the dense net of that seed) and each consistency-with-dense metric; the mean rho over seeds with a
    t-test over seeds, Holm over the metric family. Both fall with sparsity, so a positive rho says they
    fall together, not that one causes the other.

    Tested only with at least `min_rounds_for_correlation(alpha)` pruned rounds (else `kind` is
    "descriptive", no p). Metrics with the same per-seed rho in every seed (they rank the rounds alike) are
    one test: `same_as` names the first of them, which alone enters Holm, and `n_distinct` counts the family.
    """
    frame = add_accuracy_change(summary)
    frame = frame[(frame["branch"] == TICKET) & (frame["round"] > DENSE_ROUND)]
    n_rounds = int(frame["round"].nunique())
    testable = n_rounds >= min_rounds_for_correlation(alpha)
    out = []
    for column in consistency_columns_of(frame):
        _, method, metric = split_consistency_column(column)
        rhos = {
            int(seed): seed_rank_correlation(group["accuracy_change"], group[column])
            for seed, group in frame.groupby("seed")
        }
        est = inference.seed_mean(list(rhos.values()), 0.95, (-1.0, 1.0))
        out.append(
            {
                "column": column,
                "method": method,
                "metric": metric,
                "kind": "exploratory" if testable else "descriptive",
                "n_seeds": est.n,
                "n_rounds": n_rounds,
                "min_rounds": min_rounds_for_correlation(alpha),
                "per_seed_rho": rhos,
                "mean_rho": est.estimate,
                "ci_low": est.ci_low if testable else math.nan,
                "ci_high": est.ci_high if testable else math.nan,
                "p": est.p_two_sided() if testable else math.nan,
            }
        )
    groups = _identical_groups(out)
    distinct = sorted(set(groups))
    adjusted = dict(zip(distinct, inference.holm([out[i]["p"] for i in distinct]), strict=True))
    for i, (row, group) in enumerate(zip(out, groups, strict=True)):
        row["same_as"] = out[group]["column"] if group != i else None
        row["n_distinct"] = len(distinct)
        row["p_holm"] = adjusted[group]
        row["significant"] = bool(np.isfinite(row["p_holm"]) and row["p_holm"] < alpha)
    return out


# --------------------------------------------------------------------------------------- concepts


def concept_significance(tcav_summary: pd.DataFrame) -> pd.DataFrame:
    """Per branch x round x concept x layer x class: share of seeds significant, the majority call and its
    direction ("up": the concept pushes the class's logit up; "down"; "" when not significant)."""
    columns = ["branch", "round", *TCAV_KEY, "share", "significant", "direction", "mean"]
    if tcav_summary.empty:
        return pd.DataFrame(columns=columns)
    significant = tcav_summary["significant"].astype(bool)
    direction = tcav_summary.get("direction", pd.Series("", index=tcav_summary.index)).fillna("")
    grouped = tcav_summary.assign(
        sig=significant.astype(float), up=(significant & (direction == "up")).astype(float)
    )
    table = grouped.groupby(["branch", "round", *TCAV_KEY], as_index=False).agg(
        share=("sig", "mean"),
        up=("up", "mean"),
        mean=("mean", "mean"),
        remaining=("remaining_fraction", "mean"),
    )
    # Significant for the branch when more than half of the seeds say so (one seed: that seed), in the
    # direction most of its significant seeds give.
    table["significant"] = table["share"] > 0.5
    table["direction"] = np.where(
        table["significant"], np.where(2 * table["up"] >= table["share"], "up", "down"), ""
    )
    return table.drop(columns="up")


def dense_significant_concepts(tcav_summary: pd.DataFrame) -> list[dict[str, Any]]:
    """The concept x layer x class rows significant in a majority of the dense nets, with their direction
    (descriptive: which concepts the dense nets use; whether tickets lose them is `concept_loss`)."""
    table = concept_significance(tcav_summary)
    if table.empty:
        return []
    dense = dense_rows(table)
    dense = dense[dense["significant"].astype(bool)]
    return [
        dict(zip(TCAV_KEY, key, strict=True)) | {"direction": direction}
        for key, direction in zip(dense[TCAV_KEY].to_numpy().tolist(), dense["direction"], strict=True)
    ]


# --------------------------------------------------------------------------------------- controls
