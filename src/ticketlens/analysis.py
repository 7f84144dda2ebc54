"""Per-dataset tables and findings: read every ticket folder, aggregate over seeds, test the claims.

Everything that the report states is computed here from the tables, by pure functions on DataFrames, so
the findings can be unit tested on constructed tables with known answers. `summarize_dataset` is the only
function that touches the file system (reads the per-ticket targets of docs/architecture.md, writes
summary.csv, summary_agg.csv, tcav_summary.csv, findings.json and metrics.json atomically).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ticketlens import fileio
from ticketlens.errors import UserError
from ticketlens.fileio import atomic_write_text, clean_json, write_json  # noqa: F401  (report uses them)

log = logging.getLogger(__name__)

TICKET = "ticket"
DENSE_ROUND = 0
CONSISTENCY_METRICS = ("spearman_abs", "spearman_signed", "iou_top10", "iou_top20", "ssim")
REFERENCES = ("dense", "previous", "random")
# box_area / part_area (share of the image) are the chance level of the matching mass.
LOCALISATION = ("box_mass", "box_hit", "box_area", "part_mass", "part_hit", "part_area")
FAITHFULNESS = ("deletion_auc", "insertion_auc")
TCAV_KEY = ["concept", "layer", "target_class"]
# Columns that identify a row rather than measure something: never averaged over seeds.
ID_COLUMNS = ("seed", "branch", "round")
# Without a seed interval (one seed) a ticket "matches" dense when it is within this many accuracy
# points (fraction) of it, and consistency "falls" when it drops by more than this much: stated in findings.
ACCURACY_TOLERANCE = 0.01
CONSISTENCY_TOLERANCE = 0.05
NEAR_CHANCE_ACCURACY = 0.6
HEADLINE_METRIC = "spearman_abs"


# ---------------------------------------------------------------------------------------------- files


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    fileio.write_csv(frame, path, float_format="%.6g")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path} not found (run the explain / tcav steps for this ticket first)")
    return pd.read_csv(path)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path} not found (run the train step for this ticket first)")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------ layout


def concept_slug(name: str) -> str:
    return name.replace("::", "__")


def branch_rounds(branch: str, rounds: int) -> range:
    """Round 0 is the dense net and exists only for the ticket branch; controls start at round 1."""
    return range(DENSE_ROUND if branch == TICKET else 1, rounds + 1)


def ticket_folders(results: Path, config: dict[str, Any]) -> list[tuple[int, str, int, Path]]:
    """(seed, branch, round, folder) of every ticket the study config asks for."""
    study = config["study"]
    branches = [TICKET, *study.get("controls", [])]
    return [
        (int(seed), branch, r, Path(results) / f"seed_{seed}" / branch / f"round_{r}")
        for seed in study["seeds"]
        for branch in branches
        for r in branch_rounds(branch, int(study["rounds"]))
    ]


def tcav_alpha(config: dict[str, Any]) -> float:
    return float(config.get("explanations", {}).get("tcav", {}).get("alpha", 0.05))


# ----------------------------------------------------------------------------------- per ticket


def metrics_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "remaining_fraction": float(metrics["remaining_fraction"]),
        "test_accuracy": float(metrics["test_accuracy"]),
        "test_loss": float(metrics.get("test_loss", np.nan)),
        "early_stop_iteration": float(metrics.get("early_stop_iteration", np.nan)),
        "early_stop_val_accuracy": float(metrics.get("early_stop_val_accuracy", np.nan)),
    }


def consistency_columns(consistency: pd.DataFrame, is_dense: bool) -> dict[str, float]:
    """Mean over probe images of each reference x method x metric: `cons_{reference}_{method}_{metric}`.

    The dense net compared with itself is identical by definition, so its missing `dense` rows are 1.0:
    this anchors the consistency curves at round 0 without a self-comparison file.
    """
    out: dict[str, float] = {}
    metrics = [m for m in CONSISTENCY_METRICS if m in consistency.columns]
    means = consistency.groupby(["reference", "method"])[metrics].mean()
    for (reference, method), row in means.iterrows():
        for metric in metrics:
            out[f"cons_{reference}_{method}_{metric}"] = float(row[metric])
    if is_dense:
        for method in consistency["method"].unique():
            for metric in metrics:
                out.setdefault(f"cons_dense_{method}_{metric}", 1.0)
    return out


def saliency_columns(saliency: pd.DataFrame) -> dict[str, float]:
    """Localisation and faithfulness per method (mean over probe images) and probe accuracy."""
    out: dict[str, float] = {}
    for method, group in saliency.groupby("method"):
        for col in LOCALISATION:
            if col in group:
                out[f"loc_{method}_{col}"] = float(group[col].mean())
        for col in FAITHFULNESS:
            if col in group:
                out[f"faith_{method}_{col}"] = float(group[col].mean())
    if "correct" in saliency:
        # The same probe appears once per method: take one method so images are not double counted.
        first = saliency[saliency["method"] == saliency["method"].iloc[0]]
        out["probe_accuracy"] = float(first["correct"].astype(float).mean())
    return out


def _summarize_tcav_local(concept_rows: pd.DataFrame, null_rows: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Reference TCAV test: concept scores vs random-vs-random scores (two-sided t-test), Bonferroni."""
    null = {key: g["score"].to_numpy(float) for key, g in null_rows.groupby(["layer", "target_class"])}
    rows = []
    for (concept, layer, target), group in concept_rows.groupby(TCAV_KEY, sort=True):
        scores = group["score"].to_numpy(float)
        reference = null.get((layer, target), np.array([]))
        if len(scores) >= 2 and len(reference) >= 2:
            p_value = float(stats.ttest_ind(scores, reference).pvalue)
        else:
            p_value = float("nan")
        cav_accuracy = float(group["cav_accuracy"].mean())
        rows.append(
            {
                "concept": concept,
                "layer": layer,
                "target_class": target,
                "mean": float(scores.mean()),
                "std": float(scores.std(ddof=1)) if len(scores) > 1 else float("nan"),
                "null_mean": float(reference.mean()) if len(reference) else float("nan"),
                "p_value": p_value,
                "cav_accuracy": cav_accuracy,
                "near_chance": cav_accuracy < NEAR_CHANCE_ACCURACY,
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    n_tests = len(table)
    table["p_bonferroni"] = (table["p_value"] * n_tests).clip(upper=1.0)
    # NaN p-values (constant scores) compare False: not significant, which is the safe reading.
    table["significant"] = table["p_bonferroni"] < alpha
    return table


def summarize_tcav_table(concept_rows: pd.DataFrame, null_rows: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Per concept x layer x class: mean, std, p-value, significance (the explanations module's test)."""
    required = {*TCAV_KEY, "mean", "p_value", "significant"}
    module = _tcav_module()
    if module is not None:
        table = module.summarize_tcav(concept_rows, null_rows, alpha)
        if required <= set(table.columns):
            return table.reset_index(drop=True)
        log.warning("summarize_tcav lacks %s; using the local reference test", required - set(table.columns))
    return _summarize_tcav_local(concept_rows, null_rows, alpha)


def _tcav_module() -> Any:
    """The explanations module's TCAV statistics, or None where it is not installed (lean analysis envs)."""
    try:
        from ticketlens.explanations import tcav
    except ImportError:
        return None
    return tcav


def _tcav_agreement_local(table: pd.DataFrame, dense: pd.DataFrame) -> dict[str, float]:
    merged = table.merge(dense, on=TCAV_KEY, suffixes=("", "_dense"))
    if len(merged) >= 2 and merged["mean"].nunique() > 1 and merged["mean_dense"].nunique() > 1:
        rank_corr = float(stats.spearmanr(merged["mean"], merged["mean_dense"]).statistic)
    else:
        rank_corr = float("nan")
    mine = set(map(tuple, table.loc[table["significant"].astype(bool), TCAV_KEY].to_numpy().tolist()))
    theirs = set(map(tuple, dense.loc[dense["significant"].astype(bool), TCAV_KEY].to_numpy().tolist()))
    union = mine | theirs
    jaccard = len(mine & theirs) / len(union) if union else float("nan")
    return {"tcav_rank_corr_dense": rank_corr, "tcav_jaccard_dense": jaccard, "tcav_n_changed": float("nan")}


def tcav_agreement(
    table: pd.DataFrame, dense: pd.DataFrame, rows: pd.DataFrame, dense_rows: pd.DataFrame, alpha: float
) -> dict[str, float]:
    """Ticket vs dense net: rank correlation of concept scores, Jaccard of the significant sets (NaN when
    both are empty) and the number of concept x layer x class scores that changed significantly
    (Welch t-test per concept, Bonferroni), via `explanations.tcav.compare_tcav` where available."""
    module = _tcav_module()
    if module is None:
        return _tcav_agreement_local(table, dense)
    result = module.compare_tcav(table, dense, rows, dense_rows, alpha)
    changes = result["changes"]
    return {
        "tcav_rank_corr_dense": float(result["spearman"]),
        "tcav_jaccard_dense": float(result["jaccard"]),
        "tcav_n_changed": float(changes["changed"].astype(bool).sum()) if len(changes) else 0.0,
    }


def read_ticket_tcav(
    folder: Path, concepts: Iterable[str], alpha: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per concept x layer x class summary, the raw concept rows) of one ticket."""
    null_rows = _read_csv(folder / "tcav" / "random.csv")
    frames = [_read_csv(folder / "tcav" / f"{concept_slug(c)}.csv") for c in concepts]
    if not frames:
        empty = pd.DataFrame(columns=[*TCAV_KEY, "mean", "p_value", "significant"])
        return empty, pd.DataFrame(columns=[*TCAV_KEY, "random_set", "score", "cav_accuracy"])
    rows = pd.concat(frames, ignore_index=True)
    return summarize_tcav_table(rows, null_rows, alpha), rows


def tcav_count_columns(table: pd.DataFrame) -> dict[str, float]:
    significant = table[table["significant"].astype(bool)] if len(table) else table
    return {
        "tcav_n_significant": float(len(significant)),
        "tcav_n_concepts_significant": float(significant["concept"].nunique()) if len(table) else 0.0,
    }


# ----------------------------------------------------------------------------------- aggregation


def t_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and two-sided t-interval over seeds; (mean, nan, nan, 1) when one seed gives no interval."""
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(data)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(data.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * data.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def measure_columns(summary: pd.DataFrame) -> list[str]:
    return [c for c in summary.columns if c not in ID_COLUMNS and pd.api.types.is_numeric_dtype(summary[c])]


def aggregate(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per branch x round: `{col}_mean`, `{col}_ci_low`, `{col}_ci_high` and `n_seeds`."""
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
            mean, low, high, _ = t_interval(group[col])
            row[f"{col}_mean"], row[f"{col}_ci_low"], row[f"{col}_ci_high"] = mean, low, high
        rows.append(row)
    return _order_branches(pd.DataFrame(rows))


def _order_branches(frame: pd.DataFrame) -> pd.DataFrame:
    order = {TICKET: 0, "reinit": 1, "randmask": 2}
    key = frame["branch"].map(lambda b: order.get(b, 9))
    return frame.assign(_k=key).sort_values(["_k", "round"]).drop(columns="_k").reset_index(drop=True)


def with_dense_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Every branch's curve starts at the shared dense net: copy ticket round 0 into each control."""
    dense = summary[(summary["branch"] == TICKET) & (summary["round"] == DENSE_ROUND)]
    copies = [dense.assign(branch=b) for b in summary["branch"].unique() if b != TICKET]
    return pd.concat([summary, *copies], ignore_index=True)


def add_accuracy_change(summary: pd.DataFrame) -> pd.DataFrame:
    """Accuracy minus the dense accuracy of the same seed (paired, so seed-to-seed noise cancels)."""
    dense = summary[(summary["branch"] == TICKET) & (summary["round"] == DENSE_ROUND)]
    dense_acc = dense.set_index("seed")["test_accuracy"]
    return summary.assign(accuracy_change=summary["test_accuracy"] - summary["seed"].map(dense_acc))


# ----------------------------------------------------------------------------------------- findings


def consistency_columns_of(summary: pd.DataFrame, reference: str = "dense") -> list[str]:
    prefix = f"cons_{reference}_"
    return [c for c in summary.columns if c.startswith(prefix) and summary[c].notna().any()]


def split_consistency_column(column: str) -> tuple[str, str, str]:
    """`cons_dense_gradcam_spearman_abs` -> (dense, gradcam, spearman_abs)."""
    _, reference, rest = column.split("_", 2)
    for metric in CONSISTENCY_METRICS:
        if rest.endswith("_" + metric):
            return reference, rest[: -len(metric) - 1], metric
    method, metric = rest.rsplit("_", 1)
    return reference, method, metric


def headline_column(summary: pd.DataFrame) -> str | None:
    """Grad-CAM rank correlation with dense when there is Grad-CAM, else gradient saliency's."""
    columns = consistency_columns_of(summary)
    for method in ("gradcam", "saliency"):
        name = f"cons_dense_{method}_{HEADLINE_METRIC}"
        if name in columns:
            return name
    return columns[0] if columns else None


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
        "criterion": (
            "ticket seed-mean accuracy >= lower end of the dense 95% t-interval over seeds"
            if n_seeds >= 3
            else "two seeds (a t-interval would be vacuous): ticket seed-mean accuracy >= the worse dense seed"
            if n_seeds == 2
            else f"one seed, no interval: ticket accuracy >= dense accuracy - {tolerance}"
        ),
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
    """When each consistency-with-dense metric starts falling, against the accuracy onset.

    The baseline is round 1, the first pruned ticket: at round 0 the dense net is compared with itself
    (1.0 by definition), so a drop at round 1 would only say that retraining changes maps at all.
    """
    tickets = summary[summary["branch"] == TICKET]
    out = []
    for column in consistency_columns_of(tickets):
        _, method, metric = split_consistency_column(column)
        first, per_round, threshold = first_drop(tickets, column, 1, tolerance)
        base = per_round[per_round["round"] == 1]
        out.append(
            {
                "column": column,
                "method": method,
                "metric": metric,
                "baseline_round": 1,
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
    dense = table[(table["branch"] == TICKET) & (table["round"] == DENSE_ROUND)]
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
                "concept": key[0],
                "layer": key[1],
                "target_class": key[2],
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
    for control in [b for b in summary["branch"].unique() if b != TICKET]:
        rows = summary[summary["branch"] == control].set_index(["round", "seed"])
        for r in sorted(rows.index.get_level_values("round").unique()):
            if r not in tickets.index.get_level_values("round"):
                continue
            for column in columns:
                if column not in rows:
                    continue
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


def compute_findings(
    summary: pd.DataFrame, tcav_summary: pd.DataFrame, config: dict[str, Any]
) -> dict[str, Any]:
    """Every claim of the report, as numbers."""
    alpha = tcav_alpha(config)
    seeds = sorted(int(s) for s in summary["seed"].unique())
    match = accuracy_match(summary)
    changes, dense_sig = concept_changes(tcav_summary)
    return {
        "dataset": config.get("dataset"),
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


def compact_metrics(summary: pd.DataFrame, findings: dict[str, Any]) -> dict[str, Any]:
    """A small numbers-only dict for `dvc metrics show/diff` (None values left out)."""
    match = findings["accuracy_match"]
    last_round = int(summary["round"].max())
    final = summary[summary["round"] == last_round]
    head = findings["headline_consistency"]
    out: dict[str, Any] = {
        "n_seeds": findings["n_seeds"],
        "dense_accuracy": match["dense_accuracy"],
        "last_matching_round": match["last_matching_round"],
        "last_matching_remaining": match["last_matching_remaining"],
        "first_failing_round": match["first_failing_round"],
        "final_round": last_round,
        "final_remaining": float(final.loc[final["branch"] == TICKET, "remaining_fraction"].mean()),
    }
    for branch, group in final.groupby("branch"):
        out[f"{branch}_final_accuracy"] = float(group["test_accuracy"].mean())
        if head:
            out[f"{branch}_final_consistency"] = float(group[head].mean())
        if "tcav_n_significant" in group:
            out[f"{branch}_final_tcav_n_significant"] = float(group["tcav_n_significant"].mean())
    dense = summary[(summary["branch"] == TICKET) & (summary["round"] == DENSE_ROUND)]
    if "tcav_n_significant" in dense:
        out["dense_tcav_n_significant"] = float(dense["tcav_n_significant"].mean())
    for corr in findings["correlations"]:
        if corr["scope"] == "ticket" and corr["column"] == head:
            out["corr_accuracy_consistency_rho"] = corr["spearman_rho"]
            out["corr_accuracy_consistency_p"] = corr["spearman_p"]
            out["corr_accuracy_consistency_n"] = corr["n"]
    for gap in findings["control_gaps"]:
        if gap["round"] == last_round and gap["metric"] in ("test_accuracy", head):
            name = "accuracy" if gap["metric"] == "test_accuracy" else "consistency"
            out[f"gap_{gap['control']}_{name}_final"] = gap["mean_gap"]
    out["n_concept_changes"] = len(findings["concept_changes"])
    cleaned = clean_json(out)
    # Six significant digits: enough for any comparison, short enough to read in `dvc metrics diff`.
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in cleaned.items() if v is not None}


# -------------------------------------------------------------------------------------- entry point


TicketKey = tuple[int, str, int]


def ticket_tables(
    results: Path, config: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[TicketKey, pd.DataFrame]]:
    """Read every ticket folder: (summary without TCAV agreement, all tickets' TCAV summaries, raw TCAV
    concept rows per (seed, branch, round))."""
    concepts = list(config.get("concepts", []))
    alpha = tcav_alpha(config)
    rows, tcav_frames, raw = [], [], {}
    for seed, branch, r, folder in ticket_folders(results, config):
        is_dense = branch == TICKET and r == DENSE_ROUND
        row: dict[str, Any] = {"seed": seed, "branch": branch, "round": r}
        row.update(metrics_columns(_read_json(folder / "metrics.json")))
        row.update(consistency_columns(_read_csv(folder / "consistency.csv"), is_dense))
        row.update(saliency_columns(_read_csv(folder / "saliency.csv")))
        tcav, raw[(seed, branch, r)] = read_ticket_tcav(folder, concepts, alpha)
        row.update(tcav_count_columns(tcav))
        rows.append(row)
        tcav_frames.append(
            tcav.assign(seed=seed, branch=branch, round=r, remaining_fraction=row["remaining_fraction"])
        )
    tcav_all = pd.concat(tcav_frames, ignore_index=True) if tcav_frames else pd.DataFrame()
    lead = ["seed", "branch", "round", "remaining_fraction"]
    tcav_all = tcav_all[lead + [c for c in tcav_all.columns if c not in lead]]
    return pd.DataFrame(rows), tcav_all, raw


def add_tcav_agreement(
    summary: pd.DataFrame, tcav_all: pd.DataFrame, raw: dict[TicketKey, pd.DataFrame], alpha: float
) -> pd.DataFrame:
    """TCAV agreement of every ticket with the dense net of the same seed (see `tcav_agreement`)."""
    tables = {key: group for key, group in tcav_all.groupby(["seed", "branch", "round"])}
    out = []
    for seed, branch, r in summary[["seed", "branch", "round"]].itertuples(index=False, name=None):
        key, dense_key = (seed, branch, r), (seed, TICKET, DENSE_ROUND)
        if key not in tables or dense_key not in tables:
            out.append(
                {"tcav_rank_corr_dense": np.nan, "tcav_jaccard_dense": np.nan, "tcav_n_changed": np.nan}
            )
        else:
            out.append(tcav_agreement(tables[key], tables[dense_key], raw[key], raw[dense_key], alpha))
    return pd.concat([summary.reset_index(drop=True), pd.DataFrame(out)], axis=1)


def summarize_dataset(dataset: str, results: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Write summary.csv, summary_agg.csv, tcav_summary.csv, findings.json, metrics.json; return findings."""
    results = Path(results)
    config = {**config, "dataset": config.get("dataset", dataset)}
    summary, tcav_all, raw = ticket_tables(results, config)
    summary = _order_branches(add_tcav_agreement(summary, tcav_all, raw, tcav_alpha(config)))
    summary = summary.sort_values(["seed"], kind="stable").reset_index(drop=True)
    findings = compute_findings(summary, tcav_all, config)
    write_csv(summary, results / "summary.csv")
    write_csv(aggregate(summary), results / "summary_agg.csv")
    write_csv(tcav_all, results / "tcav_summary.csv")
    write_json(findings, results / "findings.json")
    write_json(compact_metrics(summary, findings), results / "metrics.json")
    log.info("%s: %d tickets summarised into %s", dataset, len(summary), results)
    return findings
