"""Markdown of the dataset report and the study report: tables of the summary and findings, and the
generated sentences. Text only: no file access, no matplotlib."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ticketlens.analysis.tables import aggregate_over_seeds, split_consistency_column
from ticketlens.report.power_text import power_rows
from ticketlens.report.sentences import STUDY_SECTIONS, finding_sentences
from ticketlens.report.why import why_tables
from ticketlens.report.wording import method_name
from ticketlens.study import HEADLINE_METRIC

OVERVIEW_TCAV = {
    "tcav_rank_corr_dense": "TCAV rank corr. vs dense",
    "tcav_jaccard_dense": "TCAV Jaccard vs dense",
    "tcav_n_significant": "significant rows per net (concept x layer x class)",
    "tcav_n_changed": "rows whose decision differs from dense",
}
QUALITY_NAMES = {
    "box_mass": "box mass",
    "box_area": "box area (chance)",
    "box_hit": "box hit",
    "part_mass": "part mass",
    "part_area": "part area (chance)",
    "part_hit": "part hit",
    "deletion_auc": "deletion AUC (lower better)",
    "insertion_auc": "insertion AUC (higher better)",
}
# The findings tables of the dataset report: (heading, findings key, columns shown).
FINDINGS_TABLES = (
    (
        "Consistency ceiling, floor and drift onset per metric",
        "drift",
        ["method", "metric", "ceiling", "ceiling_ci_low", "ceiling_ci_high", "floor", "last_not_drifted_round",
         "first_drift_round", "relation", "lag_rounds"],
    ),
    (
        "Within-seed Spearman rho of accuracy change and consistency (tested from 5 rounds; Holm over distinct metrics)",
        "correlations",
        ["method", "metric", "kind", "n_seeds", "n_rounds", "mean_rho", "ci_low", "ci_high", "p", "p_holm", "same_as",
         "significant"],
    ),
)  # fmt: skip
ACCURACY_COLUMNS = [
    "round",
    "remaining",
    "difference",
    "ci_low",
    "ci_high",
    "p_matches",
    "p_fails",
    "verdict",
]
DRIFT_COLUMNS = [
    "round",
    "remaining",
    "consistency",
    "difference",
    "ci_low",
    "ci_high",
    "p_drifted",
    "verdict",
]
STUDY_INTRO = [
    "# ticketlens: lottery tickets, explained",
    "",
    "Per-dataset headlines (generated from each dataset's `findings.json`):",
    "",
]
GAP_COLUMNS = [
    "control",
    "round",
    "remaining",
    "metric",
    "mean_gap",
    "ci_low",
    "ci_high",
    "n",
    "p",
    "p_holm",
    "test",
]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(none)_\n"
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def _with_interval(agg: pd.DataFrame, column: str, scale: float = 1.0, digits: int = 3) -> pd.Series:
    def fmt(row: pd.Series) -> str:
        mean = row.get(f"{column}_mean")
        if mean is None or not np.isfinite(mean):
            return "n/a"
        low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
        text = f"{scale * mean:.{digits}g}"
        if low is not None and np.isfinite(low):
            text += f" [{scale * low:.{digits}g}, {scale * high:.{digits}g}]"
        return text

    return agg.apply(fmt, axis=1)


def overview_table(summary: pd.DataFrame, head: str | None) -> pd.DataFrame:
    agg = aggregate_over_seeds(summary)
    table = pd.DataFrame(
        {
            "branch": agg["branch"],
            "round": agg["round"],
            "weights left (%)": (100 * agg["remaining_fraction_mean"]).map(lambda v: f"{v:.3g}"),
            "test accuracy (%)": _with_interval(agg, "test_accuracy", 100, 4),
            "early stop (iter)": agg["early_stop_iteration_mean"].map(lambda v: _cell(float(v))),
            "n seeds": agg["n_seeds"],
        }
    )
    if head:
        _, method, metric = split_consistency_column(head)
        table[f"{method_name(method)} {metric} vs dense"] = _with_interval(agg, head)
    for column, name in OVERVIEW_TCAV.items():
        if f"{column}_mean" in agg:
            table[name] = _with_interval(agg, column)
    for column in (c for c in summary.columns if c.startswith("empty_") and "n_probe" in summary):
        sums = summary.groupby(["branch", "round"])[[column, "n_probe"]].sum()
        table[f"empty {method_name(column.removeprefix('empty_'))} maps"] = [
            f"{int(sums.loc[(b, r), column])} of {int(sums.loc[(b, r), 'n_probe'])}"
            for b, r in zip(agg["branch"], agg["round"], strict=True)
        ]
    return table


def explanation_quality_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Localisation and faithfulness (seed means), one row per branch x round x method.

    Mass inside the box / parts is shown next to their area, the mass a uniform map would have.
    """
    agg = aggregate_over_seeds(summary)
    rows = []
    for method in dict.fromkeys(c.split("_")[1] for c in summary.columns if c.startswith(("loc_", "faith_"))):
        for rec in agg.to_dict(orient="records"):
            row: dict[str, Any] = {
                "branch": rec["branch"],
                "round": rec["round"],
                "method": method_name(method),
            }
            for key, name in QUALITY_NAMES.items():
                for prefix in ("loc", "faith"):
                    column = f"{prefix}_{method}_{key}"
                    if column in summary and summary[column].notna().any():
                        row[name] = rec[f"{column}_mean"]
            rows.append(row)
    return pd.DataFrame(rows)


def _records(items: list[dict[str, Any]], keep: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(items)
    return frame[[c for c in keep if c in frame]] if not frame.empty else frame


def _gap_table(findings: dict[str, Any]) -> pd.DataFrame:
    """Control gaps of accuracy, the headline consistency and TCAV rank correlation only."""
    gaps = _records(findings["control_gaps"], GAP_COLUMNS)
    if gaps.empty:
        return gaps
    shown = ["test_accuracy", findings.get("headline_consistency"), "tcav_rank_corr_dense"]
    return gaps[gaps["metric"].isin(shown)]


def _per_round_tables(findings: dict[str, Any]) -> list[str]:
    """The accuracy test per round and the drift test per round of each method's headline metric."""
    m = findings["accuracy_match"]
    lines = [
        f"### Accuracy: ticket minus dense net of the same seed, per round ({m['test']})",
        "",
        markdown_table(_records(m["per_round"], ACCURACY_COLUMNS)),
    ]
    for d in findings["drift"]:
        if d["metric"] == HEADLINE_METRIC:
            lines += [
                f"### Drift: {method_name(d['method'])} consistency with the own dense net minus the ceiling",
                "",
                markdown_table(_records(d["per_round"], DRIFT_COLUMNS)),
            ]
    return lines


def _tables_markdown(summary: pd.DataFrame, findings: dict[str, Any]) -> list[str]:
    lines = [
        "## Tables",
        "",
        "### Accuracy and explanation agreement per branch and round (mean [95% CI; none below 3 seeds])",
        "",
    ]
    lines.append(markdown_table(overview_table(summary, findings.get("headline_consistency"))))
    quality = explanation_quality_table(summary)
    if not quality.empty:
        lines += ["### Localisation and faithfulness (seed means)", "", markdown_table(quality)]
    lines += _per_round_tables(findings)
    lines += [
        "### Power: minimum detectable effect (MDE) at 80% power of each test per round (docs/power.md)",
        "",
        markdown_table(pd.DataFrame(power_rows(findings))),
    ]
    for heading, key, columns in FINDINGS_TABLES:
        lines += [f"### {heading}", "", markdown_table(_records(findings[key], columns))]
    for heading, table in why_tables(findings):
        lines += [f"### {heading}", "", markdown_table(table)]
    lines += ["### Controls minus tickets at equal round (paired over seeds, Holm per metric)", ""]
    lines.append(markdown_table(_gap_table(findings)))
    return lines


def dataset_markdown(
    dataset: str, summary: pd.DataFrame, findings: dict[str, Any], figures: list[str]
) -> str:
    """report.md of one dataset; `figures` are the file stems under figures/, in report order."""
    lines = [f"# {dataset}: do lottery tickets use the same evidence as the dense network?", ""]
    lines.append(
        f"Seeds: {', '.join(map(str, findings['seeds']))}; pruning rounds: {findings['rounds']}; controls: "
        f"{', '.join(findings['controls']) or 'none'}; intervals: {findings['interval']}; findings tests at "
        f"alpha {findings['alpha']:g}, accuracy margin {100 * findings['accuracy_margin']:g} point(s), "
        f"consistency margin {findings['consistency_margin']:g} (params `findings`). "
        "Every sentence below is generated from `findings.json`."
    )
    lines.append("")
    for section, sentences in finding_sentences(findings).items():
        lines += [f"## {section}", ""] + [f"- {s}" for s in sentences] + [""]
    lines += _tables_markdown(summary, findings)
    lines += ["## Figures", ""]
    for name in figures:
        lines += [f"### {name}", "", f"![{name}](figures/{name}.png) ([SVG](figures/{name}.svg))", ""]
    lines.append("Full tables: `summary.csv`, `summary_agg.csv`, `tcav_summary.csv`, `findings.json`.")
    return "\n".join(lines) + "\n"


def study_dataset_markdown(
    dataset: str, findings: dict[str, Any], headline: str, report_link: str, figure_link: str | None
) -> list[str]:
    """One dataset's section of the study report; links are relative to the study report."""
    lines = [f"## {dataset}", "", f"- {headline}."]
    for section, sentences in finding_sentences(findings).items():
        if section in STUDY_SECTIONS:
            lines += [f"- {s}" for s in sentences]
    lines += ["", f"Full report: [{report_link}]({report_link})", ""]
    if figure_link is not None:
        lines += [f"![{dataset} accuracy]({figure_link})", ""]
    return lines
