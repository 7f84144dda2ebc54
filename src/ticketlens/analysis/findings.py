"""Every claim the report states, as a statistical test computed from the summary tables by pure functions.

- Accuracy: does a ticket match its dense net? Non-inferiority on per-seed paired differences (ticket
  round r minus the dense net of the same seed) with the margin of `findings.accuracy_margin`, test-set
  noise included (`inference.seed_mean`): "matches", "fails" (significantly below the margin) or
  "not determined"; the onset by fixed-sequence testing over rounds (`inference.onset`).
- Drift: is a ticket further from its dense net than another dense seed is (the ceiling)? The same
  machinery on consistency minus the dense seed-to-seed consistency (`inference.difference_from_ceiling`).
- Before / with / after: only when both onsets are determined, from the interval of rounds each onset lies in.
- Correlations (exploratory) and control gaps: `associations`; concept loss (ticket minus dense TCAV
  effect, paired over seeds): `concept_loss`; forgetting and the drift-first tests: `forgetting` (added
  by `summary.summarize_dataset`, which reads the per-image tables).

With fewer than 3 seeds everything is numbers only: no interval, no test, and the findings say so.
Everything is unit tested on constructed and simulated tables (tests/analysis/test_summary.py, test_findings.py);
`summary.summarize_dataset` reads the ticket files and writes what `compute_findings` returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ticketlens.analysis import inference, power
from ticketlens.analysis.associations import (
    control_gaps,
    dense_significant_concepts,
    gap_columns,
    within_seed_correlations,
)
from ticketlens.analysis.concept_loss import concept_loss
from ticketlens.analysis.tables import (
    consistency_column,
    consistency_columns_of,
    dense_rows,
    split_consistency_column,
)
from ticketlens.fileio import clean_json
from ticketlens.study import (
    DENSE_ROUND,
    HEADLINE_METRIC,
    METRIC_RANGES,
    TICKET,
    FindingsSettings,
    branch_order,
)

Outcomes = dict[tuple[int, str, int], np.ndarray]  # (seed, branch, round) -> per test image correct
NOT_DRIFTED = "not drifted in the rounds run"  # every round shown not to drift, not merely none shown to
DRIFT_WORDS = {inference.MATCHES: "not drifted", inference.FAILS: "drifted"}


def headline_column(summary: pd.DataFrame) -> str | None:
    """Grad-CAM rank correlation with dense when there is Grad-CAM, else gradient saliency's."""
    columns = consistency_columns_of(summary)
    for method in ("gradcam", "saliency"):
        name = consistency_column("dense", method, HEADLINE_METRIC)
        if name in columns:
            return name
    return columns[0] if columns else None


def outcome_differences(outcomes: Outcomes | None, keys: list[tuple[Any, Any]]) -> np.ndarray | None:
    """Seeds x test images of correct(a) - correct(b) for [(key_a, key_b)], or None where any is missing."""
    if not outcomes or any(a not in outcomes or b not in outcomes for a, b in keys):
        return None
    rows = [outcomes[a].astype(float) - outcomes[b].astype(float) for a, b in keys]
    return np.stack(rows) if rows and len({len(r) for r in rows}) == 1 else None


# --------------------------------------------------------------------------------------- accuracy


def _dense_accuracy(tickets: pd.DataFrame, outcomes: Outcomes | None) -> inference.Estimate:
    dense = tickets[tickets["round"] == DENSE_ROUND].sort_values("seed")
    keys = [((int(s), TICKET, DENSE_ROUND), None) for s in dense["seed"]]
    correct = None
    if outcomes and all(k in outcomes for k, _ in keys):
        correct = np.stack([outcomes[k].astype(float) for k, _ in keys])
    return inference.seed_mean(dense["test_accuracy"].tolist(), 0.95, (0.0, 1.0), correct)


def accuracy_rounds(
    tickets: pd.DataFrame, outcomes: Outcomes | None, settings: FindingsSettings
) -> list[dict[str, Any]]:
    """Per pruned round: the paired accuracy difference to the dense net, its interval and the verdict."""
    dense = tickets[tickets["round"] == DENSE_ROUND].set_index("seed")["test_accuracy"]
    alpha, margin = settings.alpha, settings.accuracy_margin
    rows = []
    for r, group in tickets[tickets["round"] > DENSE_ROUND].groupby("round", sort=True):
        group = group[group["seed"].isin(dense.index)].sort_values("seed")
        seeds = [int(s) for s in group["seed"]]
        differences = (group["test_accuracy"] - group["seed"].map(dense)).tolist()
        pairs = [((s, TICKET, int(r)), (s, TICKET, DENSE_ROUND)) for s in seeds]
        est = inference.seed_mean(
            differences, 1 - 2 * alpha, (-1.0, 1.0), outcome_differences(outcomes, pairs)
        )
        rows.append(
            {
                "round": int(r),
                "remaining": float(group["remaining_fraction"].mean()),
                "difference": est.estimate,
                **_interval(est),
                "p_matches": est.p_above(-margin),
                "p_fails": est.p_below(-margin),
                "verdict": inference.verdict(est, margin, alpha),
                **accuracy_power(est, margin, alpha),
            }
        )
    return rows


def accuracy_power(est: inference.Estimate, margin: float, alpha: float) -> dict[str, Any]:
    """What this round's accuracy tests could see at 80% power (`power.power_fields`, same standard error
    and degrees of freedom as the tests): `fails_power` for a drop below -margin, `matches_power` for a
    difference above it."""
    return {
        "fails_power": power.power_fields(est.estimate, est.se, est.df, est.n, -margin, -1, alpha),
        "matches_power": power.power_fields(est.estimate, est.se, est.df, est.n, -margin, +1, alpha),
    }


def _interval(est: inference.Estimate) -> dict[str, Any]:
    return {"ci_low": est.ci_low, "ci_high": est.ci_high, "se": est.se, "df": est.df, "n": est.n}


def test_description(n_seeds: int, what: str) -> str:
    if n_seeds < inference.MIN_SEEDS_FOR_TESTS:
        return f"{n_seeds} seed(s): numbers only, no interval and no test (a test needs at least 3 seeds)"
    return what


def accuracy_match(
    summary: pd.DataFrame, settings: FindingsSettings, outcomes: Outcomes | None = None
) -> dict[str, Any]:
    """Does each ticket round match its dense net, and from which round do tickets fail?"""
    tickets = summary[summary["branch"] == TICKET]
    n_seeds = int(tickets["seed"].nunique())
    per_round = accuracy_rounds(tickets, outcomes, settings)
    last, first = inference.onset({row["round"]: row["verdict"] for row in per_round})
    remaining = {row["round"]: row["remaining"] for row in per_round} | {DENSE_ROUND: 1.0}
    dense = _dense_accuracy(tickets, outcomes)
    level = f"{100 * (1 - 2 * settings.alpha):g}%"
    return {
        "test": test_description(
            n_seeds,
            f"non-inferiority of the paired accuracy difference (ticket minus the dense net of the same seed) "
            f"at a margin of {100 * settings.accuracy_margin:g} point(s): one-sided t-tests at alpha {settings.alpha:g} "
            f"({level} intervals), standard error over seeds plus test-set noise, fixed-sequence over rounds",
        ),
        "margin": settings.accuracy_margin,
        "alpha": settings.alpha,
        "n_seeds": n_seeds,
        "test_set_noise": outcomes is not None and bool(outcomes),
        "dense_accuracy": dense.estimate,
        "dense_ci_low": dense.ci_low,
        "dense_ci_high": dense.ci_high,
        "last_matching_round": last,
        "last_matching_remaining": remaining.get(last),
        "first_failing_round": first,
        "first_failing_remaining": remaining.get(first) if first is not None else None,
        "per_round": per_round,
    }


# ------------------------------------------------------------------------------------------ drift


def ceiling_pairs(ceiling: pd.DataFrame, method: str, metric: str) -> dict[tuple[int, int], float]:
    """{(seed, other seed): mean consistency of their dense nets} of one method and metric."""
    if ceiling is None or ceiling.empty or metric not in ceiling:
        return {}
    part = ceiling[ceiling["method"] == method]
    return {
        (int(a), int(b)): float(v) for a, b, v in part[["seed", "other_seed", metric]].itertuples(index=False)
    }


def reference_levels(
    summary: pd.DataFrame, pairs: dict[tuple[int, int], float], method: str, metric: str
) -> dict[str, Any]:
    """The ceiling (dense vs dense of another seed) and the floor (dense vs its randomised-weights copy)."""
    bounds = METRIC_RANGES.get(metric, (-1.0, 1.0))
    ceiling = inference.pair_mean(pairs, 0.95, bounds)
    floor_column = consistency_column("random", method, metric)
    dense = dense_rows(summary)
    floor = inference.seed_mean(dense[floor_column].tolist() if floor_column in dense else [], 0.95, bounds)
    return {
        "ceiling": ceiling.estimate,
        "ceiling_ci_low": ceiling.ci_low,
        "ceiling_ci_high": ceiling.ci_high,
        "ceiling_pairs": len(pairs),
        "floor": floor.estimate,
        "floor_ci_low": floor.ci_low,
        "floor_ci_high": floor.ci_high,
    }


def drift_rounds(
    tickets: pd.DataFrame, column: str, pairs: dict[tuple[int, int], float], settings: FindingsSettings
) -> list[dict[str, Any]]:
    """Per pruned round: consistency with the own dense net minus the ceiling, interval and verdict."""
    metric = split_consistency_column(column)[2]
    low, high = METRIC_RANGES.get(metric, (-1.0, 1.0))
    alpha, margin = settings.alpha, settings.consistency_margin
    rows = []
    for r, group in tickets[tickets["round"] > DENSE_ROUND].groupby("round", sort=True):
        values = {int(s): float(v) for s, v in zip(group["seed"], group[column], strict=True)}
        est = inference.difference_from_ceiling(values, pairs, 1 - 2 * alpha, (low - high, high - low))
        verdict = inference.verdict(est, margin, alpha)
        rows.append(
            {
                "round": int(r),
                "remaining": float(group["remaining_fraction"].mean()),
                "consistency": float(np.nanmean(list(values.values()))),
                "difference": est.estimate,
                **_interval(est),
                "p_drifted": est.p_below(-margin),
                "verdict": DRIFT_WORDS.get(verdict, verdict),
                "drift_power": power.power_fields(est.estimate, est.se, est.df, est.n, -margin, -1, alpha),
            }
        )
    return rows


def relation(
    accuracy: tuple[int, int | None], drift: tuple[int, int | None], last_round: int
) -> tuple[str, list[int] | None]:
    """Does drift start before, with or after the accuracy failure, and the interval of the lag (rounds)?

    Each onset lies in (last round shown unchanged, first round of the changed run]; the lag (drift onset
    minus accuracy onset) then lies in [drift_last + 1 - acc_first, drift_first - acc_last - 1]. The
    relation is stated only when both onsets are determined and that interval excludes the others.
    Without a drift onset, "not drifted in the rounds run" needs every round up to `last_round` shown not
    to drift; a round that is not determined leaves it "not determined" (absence of evidence is not
    evidence of absence).
    """
    (acc_last, acc_first), (drift_last, drift_first) = accuracy, drift
    if drift_first is None:
        return (NOT_DRIFTED if drift_last >= last_round else inference.NOT_DETERMINED), None
    if acc_first is None:
        return inference.NOT_DETERMINED, None
    lag = [drift_last + 1 - acc_first, drift_first - acc_last - 1]
    if lag[1] < 0:
        return "before", lag
    if lag[0] > 0:
        return "after", lag
    return ("with" if lag == [0, 0] else inference.NOT_DETERMINED), lag


def drift_onsets(
    summary: pd.DataFrame, ceiling: pd.DataFrame, match: dict[str, Any], settings: FindingsSettings
) -> list[dict[str, Any]]:
    """When each consistency-with-dense metric drifts below the dense seed-to-seed ceiling."""
    tickets = summary[summary["branch"] == TICKET]
    accuracy = (match["last_matching_round"], match["first_failing_round"])
    out = []
    for column in consistency_columns_of(tickets):
        _, method, metric = split_consistency_column(column)
        pairs = ceiling_pairs(ceiling, method, metric)
        per_round = drift_rounds(tickets, column, pairs, settings)
        verdicts = {row["round"]: row["verdict"] for row in per_round}
        last, first = inference.onset(
            {r: {v: k for k, v in DRIFT_WORDS.items()}.get(v, v) for r, v in verdicts.items()}
        )
        rel, lag = relation(accuracy, (last, first), max(verdicts, default=DENSE_ROUND))
        remaining = {row["round"]: row["remaining"] for row in per_round} | {DENSE_ROUND: 1.0}
        out.append(
            {
                "column": column,
                "method": method,
                "metric": metric,
                **reference_levels(summary, pairs, method, metric),
                "last_not_drifted_round": last,
                "last_not_drifted_remaining": remaining.get(last),
                "first_drift_round": first,
                "first_drift_remaining": remaining.get(first) if first is not None else None,
                "accuracy_first_failing_round": accuracy[1],
                "relation": rel,
                "lag_rounds": lag,
                "per_round": per_round,
            }
        )
    return out


def empty_map_counts(summary: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Per method, per branch x round (summed over seeds): maps with no positive cell, of all probe maps."""
    out: dict[str, list[dict[str, Any]]] = {}
    for column in (c for c in summary.columns if c.startswith("empty_")):
        method = column.removeprefix("empty_")
        rows = []
        for (branch, r), group in summary.groupby(["branch", "round"], sort=False):
            maps = group["n_probe"].sum() if "n_probe" in group else 0
            rows.append(
                {"branch": branch, "round": int(r), "empty": int(group[column].sum()), "maps": int(maps)}
            )
        out[method] = sorted(rows, key=lambda row: (branch_order(row["branch"]), row["round"]))
    return out


# ----------------------------------------------------------------------------------------- result


def compute_findings(
    summary: pd.DataFrame,
    tcav_summary: pd.DataFrame,
    dataset: str,
    settings: FindingsSettings,
    ceiling: pd.DataFrame | None = None,
    outcomes: Outcomes | None = None,
    tcav_alpha: float | None = None,
) -> dict[str, Any]:
    """Every claim of the report, as numbers and verdicts.

    `ceiling`: the dense seed-to-seed consistency (`explanations.compare.dense_seed_consistency`);
    `outcomes`: per-ticket test-image correctness (for test-set noise); `tcav_alpha`: the TCAV level.
    """
    seeds = sorted(int(s) for s in summary["seed"].unique())
    ceiling = ceiling if ceiling is not None else pd.DataFrame()
    match = accuracy_match(summary, settings, outcomes)
    tested = len(seeds) >= inference.MIN_SEEDS_FOR_TESTS
    return {
        "dataset": dataset,
        "seeds": seeds,
        "n_seeds": len(seeds),
        "tested": tested,
        "rounds": int(summary["round"].max()),
        "controls": [b for b in summary["branch"].unique() if b != TICKET],
        "alpha": settings.alpha,
        "tcav_alpha": settings.alpha if tcav_alpha is None else tcav_alpha,
        "accuracy_margin": settings.accuracy_margin,
        "consistency_margin": settings.consistency_margin,
        "interval": (
            f"{100 * (1 - 2 * settings.alpha):g}% t-intervals over seeds for the one-sided tests, 95% otherwise"
            if tested
            else f"none: {len(seeds)} seed(s), numbers only (a test needs at least 3 seeds)"
        ),
        "headline_consistency": headline_column(summary),
        "accuracy_match": match,
        "drift": drift_onsets(summary, ceiling, match, settings),
        "ceiling_pairs": ceiling.to_dict(orient="records"),
        "empty_maps": empty_map_counts(summary),
        "correlations": within_seed_correlations(summary, settings.alpha),
        "concepts_dense_significant": dense_significant_concepts(tcav_summary),
        "concept_loss": concept_loss(tcav_summary, settings.alpha, settings.concept_margin),
        "control_gaps": control_gaps(summary, gap_columns(summary), settings.alpha, outcomes),
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
    for drift in findings["drift"]:
        if drift["column"] == head:
            out["consistency_ceiling"] = drift["ceiling"]
            out["consistency_floor"] = drift["floor"]
            out["first_drift_round"] = drift["first_drift_round"]
    for corr in findings["correlations"]:
        if corr["column"] == head:
            out["corr_accuracy_consistency_within_seed_rho"] = corr["mean_rho"]
            out["corr_accuracy_consistency_p_holm"] = corr["p_holm"]
    for gap in findings["control_gaps"]:
        if gap["round"] == out["final_round"] and gap["metric"] in ("test_accuracy", head):
            name = "accuracy" if gap["metric"] == "test_accuracy" else "consistency"
            out[f"gap_{gap['control']}_{name}_final"] = gap["mean_gap"]
    for column in (c for c in summary.columns if c.startswith("empty_")):
        out[f"{column}_maps"] = float(summary[column].sum())
    out["n_concepts_lost"] = len(findings["concept_loss"]["ranking"])
    if "late_val_gain" in summary:  # on a plateau? dense nets and tickets (docs/benchmarks.md, issue 20)
        out["max_late_val_gain_tickets"] = float(
            summary.loc[summary["branch"] == TICKET, "late_val_gain"].max()
        )
    cleaned = clean_json(out)
    # Six significant digits: enough for any comparison, short enough to read in `dvc metrics diff`.
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in cleaned.items() if v is not None}
