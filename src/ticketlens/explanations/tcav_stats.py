"""TCAV statistics without torch: rank p-values, the per-ticket decision (Holm, learnability, direction),
the calibration of the test, and how a ticket's concept decisions differ from the dense net's.

The TCAV job (`tcav_significance`) writes one row per concept x layer x class with the TCAV score (column `mean`:
the mean over K counterpart fits) and the test statistic (`cosine`: the mean cosine between CAV and
gradients), their permutation null's means, the effect (cosine minus its null's) with an interval, the
two-sided rank p-value and its side, and the learnability test of the concept's CAV accuracy. What needs all of a ticket's concepts at once, Holm over the ticket's
concepts x layers x classes, happens here at summary time (`decide`). Calibration rows (held-out random sets
run through the concept path) are judged exactly like a concept added to the ticket's family
(`calibration_rates`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

KEYS = ["concept", "layer", "target_class"]
TIE_TOLERANCE = 1e-9  # statistics that agree to this are ties (means of counts, summed in any order)
# One row per concept x layer x class, as the TCAV job writes it (tcav/{slug}.csv, tcav/calibration.csv).
TEST_COLUMNS = [*KEYS, "mean", "null_mean", "cosine", "null_cosine", "effect", "effect_low", "effect_high", "p_value",
                "side", "cav_accuracy", "null_accuracy", "p_learnable", "n_null", "n_counterparts", "classifier"]  # fmt: skip
DECISION_COLUMNS = ["p_holm", "learnable", "significant", "direction"]


# ---------------------------------------------------------------- rank statistics


def upper_rank_p(concept: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided rank p-value that the concept's value is larger: (1 + #{null >= concept}) / (1 + N).

    concept (...), null (N, ...); ties count against the concept, which keeps the test valid.
    """
    at_least = (null >= concept[None] - TIE_TOLERANCE).sum(0)
    return (1 + at_least) / (1 + len(null))


def equal_tailed_p(concept: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p = min(1, 2 min(p_up, p_down)) and the side (+1 up, -1 down, 0 undecided).

    Each one-sided rank p-value is valid under exchangeability, so their Bonferroni pair is too, whatever
    the null's skew (folding at a fixed centre would assume a symmetric null).
    """
    p_up, p_down = upper_rank_p(concept, null), upper_rank_p(-concept, -null)
    side = np.sign(p_down - p_up).astype(int)  # the smaller one-sided p-value names the direction
    return np.minimum(1.0, 2 * np.minimum(p_up, p_down)), side


def null_bounds(null: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Rank bounds (q_lo, q_hi) of the null at level alpha: T_c > q_hi (or < q_lo) iff p <= alpha.

    Rejecting upwards needs #{T_j >= T_c} <= k with k = floor(alpha/2 (1 + N)) - 1, i.e. T_c above the
    (k+1)-th largest null value. With k < 0 nothing can be rejected: the bounds are the score range [0, 1].
    """
    count = len(null)
    k = math.floor(alpha / 2 * (1 + count) + TIE_TOLERANCE) - 1
    if k < 0:
        return np.zeros(null.shape[1:]), np.ones(null.shape[1:])
    ordered = np.sort(null, axis=0)
    return ordered[k], ordered[count - 1 - k]


def null_draws_needed(n_tests: int, alpha: float) -> int:
    """Smallest N for which Holm over `n_tests` can reject anything: 2 / (1 + N) <= alpha / n_tests."""
    return max(1, math.ceil(2 * n_tests / alpha) - 1)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN last; every entry counts as a test)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    steps = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.fmax.accumulate(steps)) if len(p) else steps
    return adjusted


# ---------------------------------------------------------------- one layer's rows


@dataclass(frozen=True)
class SetStatistics:
    """Per image set (the concept first, then its N null draws) and class: the TCAV score (the mean over K
    fits of the share of inputs with a positive directional derivative) and the test statistic, the mean
    over K fits and the class's inputs of the cosine between CAV and gradient; per set the mean held-out
    CAV accuracy."""

    scores: np.ndarray  # (1 + N) x C
    cosines: np.ndarray  # (1 + N) x C
    accuracy: np.ndarray  # (1 + N)


def layer_table(
    concept: str, layer: str, classes: list[int], stats: SetStatistics, alpha: float
) -> pd.DataFrame:
    """Rows of one concept at one layer (one per class) from its statistics and its null draws'.

    The test ranks the mean cosine (the TCAV score is its thresholded form: the share of positive cosines;
    it saturates at 0 and 1 for concepts and random sets alike, which leaves a rank test on it little
    power). The effect is the concept's mean cosine minus its null's, with the interval [U - q_hi, U - q_lo]:
    the shifts d for which U - d would not be rejected (the test inverted under a location shift), so it
    excludes 0 exactly when p <= alpha.
    """
    scores, cosines, accuracy = stats.scores, stats.cosines, stats.accuracy
    p_value, side = equal_tailed_p(cosines[0], cosines[1:])
    low, high = null_bounds(cosines[1:], alpha)
    return pd.DataFrame(
        {
            "concept": concept,
            "layer": layer,
            "target_class": np.asarray(classes, dtype=int),
            "mean": scores[0],
            "null_mean": scores[1:].mean(0),
            "cosine": cosines[0],
            "null_cosine": cosines[1:].mean(0),
            "effect": cosines[0] - cosines[1:].mean(0),
            "effect_low": cosines[0] - high,
            "effect_high": cosines[0] - low,
            "p_value": p_value,
            "side": side,
            "cav_accuracy": accuracy[0],
            "null_accuracy": float(accuracy[1:].mean()),
            "p_learnable": float(upper_rank_p(accuracy[:1], accuracy[1:, None])[0]),
            "n_null": len(scores) - 1,
        }
    )


# ---------------------------------------------------------------- the per-ticket decision


def decide(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Holm over every row (one ticket's concepts x layers x classes), the learnability gate, the direction.

    A concept whose CAV is not more accurate than its null draws' (one-sided rank test at alpha) is "not
    learnable" at that layer and never significant; its rows still count in Holm's family (conservative).
    """
    table = table.copy()
    table["p_holm"] = holm(table["p_value"].to_numpy(float))
    table["learnable"] = table["p_learnable"].to_numpy(float) <= alpha
    table["significant"] = (table["p_holm"] <= alpha) & table["learnable"]
    directions = np.select([table["side"] > 0, table["side"] < 0], ["up", "down"], "")
    table["direction"] = np.where(table["significant"], directions, "")
    return table


def summarize_tcav(concept_rows: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """A ticket's TCAV summary: its concept rows with the decision columns (empty frame for no concepts)."""
    if concept_rows.empty:
        return pd.DataFrame(columns=[*TEST_COLUMNS, *DECISION_COLUMNS])
    ordered = concept_rows.sort_values(KEYS, kind="stable").reset_index(drop=True)
    return decide(ordered, alpha)


def calibration_rates(concept_rows: pd.DataFrame, calibration_rows: pd.DataFrame, alpha: float) -> dict:
    """How often held-out random sets, run through the concept path, are called significant in one ticket.

    Each calibration set is judged as one more concept of the ticket: Holm over the ticket's concept rows
    plus its own, and the learnability gate. Returns counts (so tickets can be pooled): rows, sets, rows
    with p <= alpha (`rejected_uncorrected`), rows also learnable (`rejected_gated`), rows significant after
    Holm and the gate (`rejected_holm`), and sets with at least one such row (`sets_flagged_holm`).
    """
    counts = dict.fromkeys(["rows", "sets", "rejected_uncorrected", "rejected_gated", "rejected_holm",
                            "sets_flagged_holm"], 0)  # fmt: skip
    for _, rows in calibration_rows.groupby("concept", sort=True):
        family = decide(pd.concat([concept_rows, rows.assign(_calibration=True)], ignore_index=True), alpha)
        own = family[family["_calibration"].fillna(False).astype(bool)]
        rejected = own["p_value"] <= alpha
        counts["rows"] += len(own)
        counts["sets"] += 1
        counts["rejected_uncorrected"] += int(rejected.sum())
        counts["rejected_gated"] += int((rejected & own["learnable"]).sum())
        counts["rejected_holm"] += int(own["significant"].sum())
        counts["sets_flagged_holm"] += int(own["significant"].any())
    return counts


def calibration_summary(counts: list[dict]) -> dict:
    """Pooled calibration of a dataset: totals and rates (NaN without calibration rows)."""
    total = {key: int(sum(c[key] for c in counts)) for key in (counts[0] if counts else {})}
    rows, sets = total.get("rows", 0), total.get("sets", 0)
    rates = {
        "rate_uncorrected": total.get("rejected_uncorrected", 0) / rows if rows else float("nan"),
        "rate_gated": total.get("rejected_gated", 0) / rows if rows else float("nan"),
        "rate_holm": total.get("rejected_holm", 0) / rows if rows else float("nan"),
        "rate_sets_flagged_holm": total.get("sets_flagged_holm", 0) / sets if sets else float("nan"),
    }
    return {**total, **rates}


# ---------------------------------------------------------------- ticket vs dense net


def decision_label(table: pd.DataFrame) -> pd.Series:
    """ "up", "down" or "" (not significant) per row."""
    return table["direction"].fillna("").astype(str).where(table["significant"].astype(bool), "")


def compare_tcav(ticket: pd.DataFrame, dense: pd.DataFrame) -> dict:
    """How far a ticket's concept explanations moved from the dense net's (both decided summaries).

    Returns `spearman` (rank correlation of the statistics over shared concept x layer x class),
    `jaccard` (of the sets of significant (concept, layer, class, direction); NaN when both are empty),
    `n_significant_ticket`, `n_significant_dense`, and `changes`: per shared key both statistics, their
    difference, both decisions and whether the decision differs (`changed`). No new test is made here:
    a change is a change of the calibrated per-ticket decision.
    """
    merged = ticket.assign(decision=decision_label(ticket)).merge(
        dense.assign(decision=decision_label(dense)), on=KEYS, suffixes=("_ticket", "_dense")
    )
    rho = float("nan")
    if len(merged) >= 2 and merged["mean_ticket"].nunique() > 1 and merged["mean_dense"].nunique() > 1:
        rho = float(merged["mean_ticket"].rank().corr(merged["mean_dense"].rank()))
    significant = {
        side: {
            (*key, d)
            for *key, d in merged.loc[
                merged[f"decision_{side}"] != "", [*KEYS, f"decision_{side}"]
            ].itertuples(index=False, name=None)
        }  # fmt: skip
        for side in ("ticket", "dense")
    }
    union = significant["ticket"] | significant["dense"]
    changes = merged[KEYS].assign(
        mean_ticket=merged["mean_ticket"],
        mean_dense=merged["mean_dense"],
        delta=merged["mean_ticket"] - merged["mean_dense"],
        decision_ticket=merged["decision_ticket"],
        decision_dense=merged["decision_dense"],
        changed=merged["decision_ticket"] != merged["decision_dense"],
    )
    return {
        "spearman": rho,
        "jaccard": len(significant["ticket"] & significant["dense"]) / len(union) if union else float("nan"),
        "n_significant_ticket": int((decision_label(ticket) != "").sum()),
        "n_significant_dense": int((decision_label(dense) != "").sum()),
        "changes": changes,
    }
