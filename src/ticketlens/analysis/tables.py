"""The vocabulary of the per-dataset tables (summary.csv and its aggregate), shared by `summary`, `findings`,
`associations` and the report: column names, value ranges, branch order, the dense rows and the aggregate
over seeds. No file access.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ticketlens.analysis import inference
from ticketlens.study import DENSE_ROUND, METRIC_RANGES, SIMILARITY_METRICS, TICKET, branch_order

# Columns that identify a row rather than measure something: never averaged over seeds.
ID_COLUMNS = ("seed", "branch", "round")


# ------------------------------------------------------------------------------------- column names


def consistency_column(reference: str, method: str, metric: str) -> str:
    return f"cons_{reference}_{method}_{metric}"


def consistency_columns_of(summary: pd.DataFrame, reference: str = "dense") -> list[str]:
    prefix = f"cons_{reference}_"
    return [c for c in summary.columns if c.startswith(prefix) and summary[c].notna().any()]


def split_consistency_column(column: str) -> tuple[str, str, str]:
    """`cons_dense_gradcam_iou_top10` -> (dense, gradcam, iou_top10)."""
    _, reference, rest = column.split("_", 2)
    for metric in SIMILARITY_METRICS:
        if rest.endswith("_" + metric):
            return reference, rest[: -len(metric) - 1], metric
    method, metric = rest.rsplit("_", 1)
    return reference, method, metric


# ----------------------------------------------------------------------------------- aggregation


def column_bounds(column: str) -> tuple[float, float]:
    """The range a summary column can take, which no interval may leave."""
    if column.startswith("cons_"):
        return METRIC_RANGES.get(split_consistency_column(column)[2], (-1.0, 1.0))
    if column in ("accuracy_change", "tcav_rank_corr_dense"):
        return -1.0, 1.0
    if column.startswith(("loc_", "faith_")) or "accuracy" in column or column in ("remaining_fraction",):
        return 0.0, 1.0
    if column == "tcav_jaccard_dense":
        return 0.0, 1.0
    return 0.0, np.inf  # counts, iterations, losses


def measure_columns(summary: pd.DataFrame) -> list[str]:
    return [c for c in summary.columns if c not in ID_COLUMNS and pd.api.types.is_numeric_dtype(summary[c])]


def order_branches(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the study's branch order (`study.BRANCHES`), then by round."""
    key = frame["branch"].map(branch_order)
    return frame.assign(_k=key).sort_values(["_k", "round"]).drop(columns="_k").reset_index(drop=True)


def aggregate_over_seeds(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per branch x round: `{col}_mean`, `{col}_ci_low`, `{col}_ci_high` (95% t-interval over seeds
    clipped to the column's range; NaN below 3 seeds) and `n_seeds`."""
    rows = []
    for (branch, r), group in summary.groupby(["branch", "round"], sort=True):
        # Plain `remaining_fraction` (the seed mean; equal across seeds at a round) is the x column of the
        # DVC plot in dvc.yaml.
        row: dict[str, Any] = {
            "branch": branch,
            "round": int(r),
            "remaining_fraction": float(group["remaining_fraction"].mean()),
            "n_seeds": int(group["seed"].nunique()),
        }
        for col in measure_columns(summary):
            # Below 3 seeds no interval (numbers only): a t-interval on 1 degree of freedom says nothing.
            est = inference.seed_mean(group[col].tolist(), 0.95, column_bounds(col))
            row[f"{col}_mean"], row[f"{col}_ci_low"], row[f"{col}_ci_high"] = (
                est.estimate,
                est.ci_low,
                est.ci_high,
            )
        rows.append(row)
    return order_branches(pd.DataFrame(rows))


def dense_rows(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[(summary["branch"] == TICKET) & (summary["round"] == DENSE_ROUND)]


def with_dense_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Every branch's curve starts at the shared dense net: copy ticket round 0 into each control."""
    dense = dense_rows(summary)
    copies = [dense.assign(branch=b) for b in summary["branch"].unique() if b != TICKET]
    return pd.concat([summary, *copies], ignore_index=True)


def add_accuracy_change(summary: pd.DataFrame) -> pd.DataFrame:
    """Accuracy minus the dense accuracy of the same seed (paired, so seed-to-seed noise cancels)."""
    dense_acc = dense_rows(summary).set_index("seed")["test_accuracy"]
    return summary.assign(accuracy_change=summary["test_accuracy"] - summary["seed"].map(dense_acc))
