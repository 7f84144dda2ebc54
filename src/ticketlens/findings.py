"""Every claim the report states, computed from the summary tables by pure functions on DataFrames.

So the findings can be unit tested on constructed tables with known answers; `summary.summarize_dataset`
reads the ticket files and writes what `compute_findings` and `compact_metrics` return.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ticketlens.fileio import clean_json
from ticketlens.study import DENSE_ROUND, HEADLINE_METRIC, TICKET
from ticketlens.summary import (
    TCAV_KEY,
    add_accuracy_change,
    consistency_column,
    consistency_columns_of,
    dense_rows,
    split_consistency_column,
    t_interval,
)

# Without a seed interval (one seed) a ticket "matches" dense when it is within this many accuracy
# points (fraction) of it, and consistency "falls" when it drops by more than this much: stated in findings.
ACCURACY_TOLERANCE = 0.01
CONSISTENCY_TOLERANCE = 0.05
# Consistency with the dense net is judged from round 1, the first pruned ticket: at round 0 the dense
# net is compared with itself (1.0 by definition), so a drop at round 1 would only say that retraining
# changes maps at all.
CONSISTENCY_BASELINE_ROUND = 1


def headline_column(summary: pd.DataFrame) -> str | None:
    """Grad-CAM rank correlation with dense when there is Grad-CAM, else gradient saliency's."""
    columns = consistency_columns_of(summary)
    for method in ("gradcam", "saliency"):
        name = consistency_column("dense", method, HEADLINE_METRIC)
        if name in columns:
            return name
    return columns[0] if columns else None


# ----------------------------------------------------------------------------------------- onsets


def _round_stats(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    rows = []
    for r, group in frame.groupby("round", sort=True):
        mean, low, high, n = t_interval(group[column])
        rows.append(
            {
                "round": int(r),
                "remaining": float(group["remaining_fraction"].mean()),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
                "n": n,
            }
        )
    return pd.DataFrame(rows)


def first_drop(
    frame: pd.DataFrame, column: str, baseline_round: int, tolerance: float
) -> tuple[int | None, pd.DataFrame, float]:
    """First round after `baseline_round` whose seed mean falls below the baseline's interval.

    With three or more seeds the threshold is the lower end of the baseline round's 95% t-interval over
    seeds (the seed-to-seed spread is what "matching" has to beat). With two seeds that interval is
    vacuous (t = 12.7 on one degree of freedom), so the threshold is the lower end of the seed range
    (the worse seed); with one seed it is the baseline minus `tolerance`.
    Returns (round or None, per-round table, threshold).
    """
    per_round = _round_stats(frame, column)
    base = per_round[per_round["round"] == baseline_round]
    if base.empty:
        return None, per_round.assign(matches=np.nan), float("nan")
    base_row = base.iloc[0]
    if base_row["n"] >= 3:
        threshold = base_row["ci_low"]
    elif base_row["n"] == 2:
        threshold = frame.loc[frame["round"] == baseline_round, column].min()
    else:
        threshold = base_row["mean"] - tolerance
    per_round["matches"] = per_round["mean"] >= threshold
    later = per_round[(per_round["round"] > baseline_round) & ~per_round["matches"]]
    first = int(later["round"].iloc[0]) if len(later) else None
    return first, per_round, float(threshold)


def _matching_criterion(n_seeds: int, tolerance: float) -> str:
    if n_seeds >= 3:
        return "ticket seed-mean accuracy >= lower end of the dense 95% t-interval over seeds"
    if n_seeds == 2:
        return "two seeds (a t-interval would be vacuous): ticket seed-mean accuracy >= the worse dense seed"
    return f"one seed, no interval: ticket accuracy >= dense accuracy - {tolerance}"


def accuracy_match(summary: pd.DataFrame, tolerance: float = ACCURACY_TOLERANCE) -> dict[str, Any]:
    """Last ticket round matching dense accuracy and the first that does not.

    Matching is contiguous from the dense net: the last matching round is the one before the first
    failing round (or the last round when none fails).
    """
    tickets = summary[summary["branch"] == TICKET]
    n_seeds = int(tickets["seed"].nunique())
    first, per_round, threshold = first_drop(tickets, "test_accuracy", DENSE_ROUND, tolerance)
    rounds = sorted(int(r) for r in per_round["round"])
    last = (first - 1) if first is not None else (rounds[-1] if rounds else None)
    remaining = dict(zip(per_round["round"], per_round["remaining"], strict=True))
    dense = per_round[per_round["round"] == DENSE_ROUND].iloc[0] if len(per_round) else None
    return {
        "criterion": _matching_criterion(n_seeds, tolerance),
        "n_seeds": n_seeds,
        "threshold": threshold,
        "dense_accuracy": None if dense is None else float(dense["mean"]),
        "dense_ci_low": None if dense is None else float(dense["ci_low"]),
        "dense_ci_high": None if dense is None else float(dense["ci_high"]),
        "last_matching_round": last,
        "last_matching_remaining": remaining.get(last) if last is not None else None,
        "first_failing_round": first,
        "first_failing_remaining": remaining.get(first) if first is not None else None,
        "per_round": per_round.to_dict(orient="records"),
    }


def relation(consistency_round: int | None, accuracy_round: int | None) -> str:
    """Does consistency start falling before, with or after accuracy? 'never' rounds count as infinity."""
    if consistency_round is None and accuracy_round is None:
        return "neither falls"
    if accuracy_round is None:
        return "before"
    if consistency_round is None:
        return "after"
    if consistency_round < accuracy_round:
        return "before"
    return "with" if consistency_round == accuracy_round else "after"


def consistency_onsets(
    summary: pd.DataFrame, accuracy_first_fail: int | None, tolerance: float = CONSISTENCY_TOLERANCE
) -> list[dict[str, Any]]:
    """When each consistency-with-dense metric starts falling (after CONSISTENCY_BASELINE_ROUND),
    against the accuracy onset."""
    tickets = summary[summary["branch"] == TICKET]
    baseline = CONSISTENCY_BASELINE_ROUND
    out = []
    for column in consistency_columns_of(tickets):
        _, method, metric = split_consistency_column(column)
        first, per_round, threshold = first_drop(tickets, column, baseline, tolerance)
        base = per_round[per_round["round"] == baseline]
        out.append(
            {
                "column": column,
                "method": method,
                "metric": metric,
                "baseline_round": baseline,
                "baseline_mean": float(base["mean"].iloc[0]) if len(base) else None,
                "threshold": threshold,
                "first_drop_round": first,
                "first_drop_remaining": (
                    float(per_round.loc[per_round["round"] == first, "remaining"].iloc[0])
                    if first is not None
                    else None
                ),
                "accuracy_first_failing_round": accuracy_first_fail,
                "relation": relation(first, accuracy_first_fail),
            }
        )
    return out


# ------------------------------------------------------------------------------------ correlation


def correlate(x: pd.Series, y: pd.Series, alpha: float = 0.05) -> dict[str, Any]:
    """Spearman and Pearson correlation with p-values and n; NaN where n < 3 or a side is constant."""
    mask = x.notna() & y.notna()
    x, y = x[mask].to_numpy(float), y[mask].to_numpy(float)
    n = int(len(x))
    result: dict[str, Any] = {"n": n, "spearman_rho": np.nan, "spearman_p": np.nan}
    result.update({"pearson_r": np.nan, "pearson_p": np.nan, "significant": False})
    if n < 3 or np.ptp(x) <= 1e-12 or np.ptp(y) <= 1e-12:
        return result
    spearman = stats.spearmanr(x, y)
    pearson = stats.pearsonr(x, y)
    result.update(
        spearman_rho=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
        pearson_r=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        significant=bool(spearman.pvalue < alpha),
    )
    return result


def accuracy_consistency_correlations(summary: pd.DataFrame, alpha: float = 0.05) -> list[dict[str, Any]]:
    """Across (seed, round) points of pruned nets: accuracy change vs each consistency-with-dense metric.

    Round 0 is left out because its consistency is 1 and its change 0 by construction, which would
    manufacture a correlation. Scope `ticket` uses tickets only; `all` adds the controls.
    """
    frame = add_accuracy_change(summary)
    frame = frame[frame["round"] > DENSE_ROUND]
    out = []
    for column in consistency_columns_of(frame):
        _, method, metric = split_consistency_column(column)
        for scope, part in (("ticket", frame[frame["branch"] == TICKET]), ("all", frame)):
            out.append(
                {
                    "column": column,
                    "method": method,
                    "metric": metric,
                    "scope": scope,
                    "x": "accuracy_change",
                    **correlate(part["accuracy_change"], part[column], alpha),
                }
            )
    return out


# --------------------------------------------------------------------------------------- concepts


def concept_significance(tcav_summary: pd.DataFrame) -> pd.DataFrame:
    """Per branch x round x concept x layer x class: share of seeds significant and the majority call."""
    if tcav_summary.empty:
        return pd.DataFrame(columns=["branch", "round", *TCAV_KEY, "share", "significant", "mean"])
    grouped = tcav_summary.assign(sig=tcav_summary["significant"].astype(float))
    table = grouped.groupby(["branch", "round", *TCAV_KEY], as_index=False).agg(
        share=("sig", "mean"), mean=("mean", "mean"), remaining=("remaining_fraction", "mean")
    )
    # Significant for the branch when more than half of the seeds say so (one seed: that seed).
    table["significant"] = table["share"] > 0.5
    return table


def concept_changes(tcav_summary: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Concepts that lose or gain significance relative to the dense net, and the first round they do.

    Returns (changes, dense significant set). Each branch is compared with the shared dense net.
    """
    table = concept_significance(tcav_summary)
    if table.empty:
        return [], []
    dense = dense_rows(table)
    dense_sig = {
        tuple(k): bool(s)
        for k, s in zip(dense[TCAV_KEY].to_numpy().tolist(), dense["significant"], strict=True)
    }
    changes = []
    pruned = table[table["round"] > DENSE_ROUND].sort_values("round")
    for (branch, *key), group in pruned.groupby(["branch", *TCAV_KEY], sort=True):
        before = dense_sig.get(tuple(key))
        if before is None:
            continue
        flipped = group[group["significant"] != before]
        if flipped.empty:
            continue
        first = flipped.iloc[0]
        changes.append(
            {
                **dict(zip(TCAV_KEY, key, strict=True)),
                "branch": branch,
                "change": "lost" if before else "gained",
                "round": int(first["round"]),
                "remaining": float(first["remaining"]),
                "dense_score": float(dense.loc[(dense[TCAV_KEY] == key).all(axis=1), "mean"].iloc[0]),
                "score": float(first["mean"]),
            }
        )
    dense_list = [dict(zip(TCAV_KEY, k, strict=True)) for k, s in dense_sig.items() if s]
    return changes, dense_list


# --------------------------------------------------------------------------------------- controls


def paired_gap(control: pd.Series, ticket: pd.Series) -> dict[str, Any]:
    """Control minus ticket over seeds paired by index: mean gap, its 95% interval and a paired t-test."""
    pairs = pd.concat([control.rename("c"), ticket.rename("t")], axis=1).dropna()
    diff = (pairs["c"] - pairs["t"]).to_numpy(float)
    mean, low, high, n = t_interval(diff)
    result: dict[str, Any] = {"mean_gap": mean, "ci_low": low, "ci_high": high, "n": n}
    # Differences equal up to rounding make the t statistic meaningless (zero variance), so test only
    # when the spread is above floating-point noise.
    if n >= 2 and np.ptp(diff) > 1e-9 * max(1.0, abs(mean)):
        test = stats.ttest_rel(pairs["c"], pairs["t"])
        result.update(t=float(test.statistic), p=float(test.pvalue), test="paired t-test over seeds")
    elif n >= 2:
        result.update(t=np.nan, p=np.nan, test="no test: identical gap in every seed")
    else:
        result.update(t=np.nan, p=np.nan, test="no test: fewer than 2 seeds")
    return result


def control_gaps(summary: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """How each control differs from the ticket at equal round (equal sparsity), per metric and round."""
    out = []
    tickets = summary[summary["branch"] == TICKET].set_index(["round", "seed"])
    ticket_rounds = tickets.index.get_level_values("round")
    for control in [b for b in summary["branch"].unique() if b != TICKET]:
        rows = summary[summary["branch"] == control].set_index(["round", "seed"])
        for r in sorted(rows.index.get_level_values("round").unique()):
            if r not in ticket_rounds:
                continue
            for column in [c for c in columns if c in rows]:
                gap = paired_gap(rows.loc[r, column], tickets.loc[r, column])
                out.append(
                    {
                        "control": control,
                        "round": int(r),
                        "remaining": float(tickets.loc[r, "remaining_fraction"].mean()),
                        "metric": column,
                        **gap,
                    }
                )
    return out


def gap_columns(summary: pd.DataFrame) -> list[str]:
    columns = ["test_accuracy", *consistency_columns_of(summary)]
    return columns + [c for c in ("tcav_rank_corr_dense", "tcav_jaccard_dense") if c in summary]


# ----------------------------------------------------------------------------------------- result


def compute_findings(
    summary: pd.DataFrame, tcav_summary: pd.DataFrame, dataset: str, alpha: float
) -> dict[str, Any]:
    """Every claim of the report, as numbers."""
    seeds = sorted(int(s) for s in summary["seed"].unique())
    match = accuracy_match(summary)
    changes, dense_sig = concept_changes(tcav_summary)
    return {
        "dataset": dataset,
        "seeds": seeds,
        "n_seeds": len(seeds),
        "rounds": int(summary["round"].max()),
        "controls": [b for b in summary["branch"].unique() if b != TICKET],
        "alpha": alpha,
        "interval": "95% t-interval over seeds" if len(seeds) >= 2 else "none: one seed gives no interval",
        "headline_consistency": headline_column(summary),
        "accuracy_match": match,
        "consistency_onset": consistency_onsets(summary, match["first_failing_round"]),
        "correlations": accuracy_consistency_correlations(summary, alpha),
        "concepts_dense_significant": dense_sig,
        "concept_changes": changes,
        "control_gaps": control_gaps(summary, gap_columns(summary)),
    }


def _final_round_metrics(summary: pd.DataFrame, head: str | None) -> dict[str, Any]:
    """Seed means at the last round per branch, and the dense net's TCAV count."""
    last_round = int(summary["round"].max())
    final = summary[summary["round"] == last_round]
    out: dict[str, Any] = {
        "final_round": last_round,
        "final_remaining": float(final.loc[final["branch"] == TICKET, "remaining_fraction"].mean()),
    }
    for branch, group in final.groupby("branch"):
        out[f"{branch}_final_accuracy"] = float(group["test_accuracy"].mean())
        if head:
            out[f"{branch}_final_consistency"] = float(group[head].mean())
        if "tcav_n_significant" in group:
            out[f"{branch}_final_tcav_n_significant"] = float(group["tcav_n_significant"].mean())
    dense = dense_rows(summary)
    if "tcav_n_significant" in dense:
        out["dense_tcav_n_significant"] = float(dense["tcav_n_significant"].mean())
    return out


def compact_metrics(summary: pd.DataFrame, findings: dict[str, Any]) -> dict[str, Any]:
    """A small numbers-only dict for `dvc metrics show/diff` (None values left out)."""
    match = findings["accuracy_match"]
    head = findings["headline_consistency"]
    out: dict[str, Any] = {
        "n_seeds": findings["n_seeds"],
        "dense_accuracy": match["dense_accuracy"],
        "last_matching_round": match["last_matching_round"],
        "last_matching_remaining": match["last_matching_remaining"],
        "first_failing_round": match["first_failing_round"],
        **_final_round_metrics(summary, head),
    }
    for corr in findings["correlations"]:
        if corr["scope"] == "ticket" and corr["column"] == head:
            out["corr_accuracy_consistency_rho"] = corr["spearman_rho"]
            out["corr_accuracy_consistency_p"] = corr["spearman_p"]
            out["corr_accuracy_consistency_n"] = corr["n"]
    for gap in findings["control_gaps"]:
        if gap["round"] == out["final_round"] and gap["metric"] in ("test_accuracy", head):
            name = "accuracy" if gap["metric"] == "test_accuracy" else "consistency"
            out[f"gap_{gap['control']}_{name}_final"] = gap["mean_gap"]
    out["n_concept_changes"] = len(findings["concept_changes"])
    cleaned = clean_json(out)
    # Six significant digits: enough for any comparison, short enough to read in `dvc metrics diff`.
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in cleaned.items() if v is not None}
