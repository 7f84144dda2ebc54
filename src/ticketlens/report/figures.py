"""The report's figures: every plotting function takes tables and returns the matplotlib Figure (so tests
can inspect labels, legends and data); `save_figure` writes it as PNG + SVG atomically and reproducibly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, works on headless machines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from ticketlens.analysis.tables import (  # noqa: E402
    add_accuracy_change,
    aggregate_over_seeds,
    consistency_column,
    split_consistency_column,
    with_dense_rows,
)
from ticketlens.fileio import atomic_write  # noqa: E402
from ticketlens.report.wording import format_p, method_name, metric_name  # noqa: E402
from ticketlens.study import (  # noqa: E402
    BRANCH_LABELS,
    DENSE_ROUND,
    HEADLINE_METRIC,
    METRIC_RANGES,
    RANDMASK,
    REINIT,
    SIMILARITY_METRICS,
    TICKET,
)

BRANCH_STYLE = {
    branch: {**look, "label": BRANCH_LABELS[branch]}
    for branch, look in (
        (TICKET, {"color": "#1b6ca8", "marker": "o", "linestyle": "-"}),
        (REINIT, {"color": "#d1495b", "marker": "s", "linestyle": "--"}),
        (RANDMASK, {"color": "#6a994e", "marker": "^", "linestyle": ":"}),
    )
}

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9})
# Byte-identical figures for identical results: SVG element ids from a fixed salt, no creation dates.
plt.rcParams["svg.hashsalt"] = "ticketlens"
NO_DATE = {"svg": {"Date": None}, "png": {}}


def _style(branch: str) -> dict[str, str]:
    return BRANCH_STYLE.get(branch, {"color": "grey", "marker": "x", "linestyle": "-", "label": branch})


def save_figure(fig: Figure, folder: Path, name: str) -> list[Path]:
    """PNG (for the Snakemake report and markdown) and SVG (for print), each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        target = folder / f"{name}.{ext}"
        atomic_write(
            target,
            lambda tmp, ext=ext: fig.savefig(
                tmp, format=ext, dpi=150, bbox_inches="tight", metadata=NO_DATE[ext]
            ),
        )
        paths.append(target)
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------------------ axis helpers


def _percent_axis(ax: Any, remaining: list[float]) -> None:
    """Log x axis of weights remaining, dense on the left (pruning goes rightwards), ticks at the data."""
    ax.set_xscale("log")
    ticks = sorted({round(100 * r, 6) for r in remaining if r and r > 0}, reverse=True)
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:.3g}" for t in ticks], rotation=45)
        ax.set_xlim(max(ticks) * 1.15, min(ticks) / 1.15)
    ax.set_xlabel("weights remaining (%, log scale)")
    ax.grid(True, which="major", alpha=0.3)


def _branch_curve(
    ax: Any,
    agg: pd.DataFrame,
    column: str,
    branch: str,
    scale: float = 1.0,
    bounds: tuple[float, float] = (-1.0, 1.0),
) -> None:
    """Mean curve with its seed interval, the interval clipped to the metric's range: with 2-3 seeds a
    t-interval easily spans more than the metric can take, and drawing that only hides the curves."""
    rows = agg[agg["branch"] == branch].sort_values("round")
    if rows.empty or f"{column}_mean" not in rows or rows[f"{column}_mean"].isna().all():
        return
    x = 100 * rows["remaining_fraction_mean"].to_numpy(float)
    style = _style(branch)
    ax.plot(x, scale * rows[f"{column}_mean"], **style, linewidth=1.8, markersize=5)
    low, high = rows[f"{column}_ci_low"].to_numpy(float), rows[f"{column}_ci_high"].to_numpy(float)
    low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    if np.isfinite(low).any():
        ax.fill_between(x, scale * low, scale * high, color=style["color"], alpha=0.15, linewidth=0)


def _interval_note(n_seeds: int) -> str:
    return f"bands: 95% t-interval over {n_seeds} seeds" if n_seeds >= 2 else "one seed: no interval"


# ---------------------------------------------------------------------------------- curve figures


def _dense_accuracy_marks(ax: Any, match: dict[str, Any]) -> None:
    """The dense net's interval (or value, with one seed) and the last matching round."""
    if match.get("dense_ci_low") is not None and np.isfinite(match["dense_ci_low"]):
        ax.axhspan(
            100 * max(match["dense_ci_low"], 0.0),
            100 * min(match["dense_ci_high"], 1.0),
            color="grey",
            alpha=0.15,
            label="dense net, 95% interval",
        )
    elif match.get("dense_accuracy") is not None:
        ax.axhline(
            100 * match["dense_accuracy"], color="grey", linestyle="-.", label="dense net (no interval)"
        )
    last = match.get("last_matching_remaining")
    if last is not None:
        ax.axvline(
            100 * last,
            color="black",
            linewidth=0.8,
            linestyle=(0, (4, 2)),
            label=f"last matching round ({100 * last:.3g}% left)",
        )


def plot_accuracy(summary: pd.DataFrame, findings: dict[str, Any]) -> Figure:
    """Test accuracy vs weights remaining: tickets vs controls, seed intervals, dense band."""
    agg = aggregate_over_seeds(with_dense_rows(summary))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for branch in agg["branch"].unique():
        _branch_curve(ax, agg, "test_accuracy", branch, scale=100, bounds=(0.0, 1.0))
    _dense_accuracy_marks(ax, findings["accuracy_match"])
    _percent_axis(ax, list(agg["remaining_fraction_mean"]))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"{findings.get('dataset', '')}: accuracy vs sparsity ({_interval_note(findings['n_seeds'])})"
    )
    ax.legend(loc="lower left", frameon=True)
    fig.tight_layout()
    return fig


def consistency_methods(summary: pd.DataFrame) -> list[str]:
    columns = [c for c in summary.columns if c.startswith("cons_dense_") and summary[c].notna().any()]
    return list(dict.fromkeys(split_consistency_column(column)[1] for column in columns))


def _reference_lines(ax: Any, levels: dict[str, Any]) -> None:
    """The ceiling (dense vs the dense nets of other seeds) and the floor (dense vs randomised weights)."""
    styles = {
        "ceiling": ("-.", "ceiling: dense vs dense of other seeds"),
        "floor": ("--", "floor: dense vs randomised weights"),
    }
    for level, (linestyle, label) in styles.items():
        if levels.get(level) is not None and np.isfinite(levels[level]):
            ax.axhline(levels[level], color="black", linestyle=linestyle, linewidth=1, label=label)


def _consistency_panel(ax: Any, agg: pd.DataFrame, method: str, metric: str, levels: dict[str, Any]) -> None:
    column = consistency_column("dense", method, metric)
    for branch in agg["branch"].unique():
        _branch_curve(ax, agg, column, branch, bounds=METRIC_RANGES.get(metric, (-1.0, 1.0)))
    _reference_lines(ax, levels)
    _percent_axis(ax, list(agg["remaining_fraction_mean"]))
    ax.set_ylabel("similarity with the own dense net")
    ax.set_title(metric_name(metric))


def plot_consistency(summary: pd.DataFrame, method: str, findings: dict[str, Any]) -> Figure:
    """One panel per similarity metric: consistency with the dense net of the same seed vs weights remaining.

    The dash-dotted ceiling is the dense nets' seed-to-seed consistency (a ticket has drifted only below
    it); the dashed floor is the dense net compared with its own weight-randomised copy: consistency at
    that level means the maps no longer carry the dense net's evidence.
    """
    metrics = [m for m in SIMILARITY_METRICS if consistency_column("dense", method, m) in summary]
    levels = {d["column"]: d for d in findings.get("drift", [])}
    agg = aggregate_over_seeds(with_dense_rows(summary))
    ncols = 3 if len(metrics) > 2 else len(metrics)
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        column = consistency_column("dense", method, metric)
        _consistency_panel(ax, agg, method, metric, levels.get(column, {}))
    for ax in list(axes.flat)[len(metrics) :]:
        fig.delaxes(ax)  # no empty panels in print
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(3, len(labels)),
        frameon=False,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.suptitle(
        f"{method_name(method)} consistency with the dense net ({_interval_note(findings['n_seeds'])})"
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def _correlation_note(correlation: dict[str, Any] | None) -> str:
    """The within-seed correlation (exploratory) of the panel's metric, as the findings computed it."""
    if not correlation or correlation.get("mean_rho") is None or not np.isfinite(correlation["mean_rho"]):
        return "within-seed rho undefined"
    text = f"within-seed Spearman rho {correlation['mean_rho']:.2f} ({correlation['n_seeds']} seeds)"
    p_holm = correlation.get("p_holm")
    if p_holm is not None and np.isfinite(p_holm):
        text += f"\nHolm {format_p(p_holm)} (exploratory)"
    return text


def _scatter_panel(ax: Any, frame: pd.DataFrame, method: str, note: str) -> None:
    column = consistency_column("dense", method, HEADLINE_METRIC)
    for branch in frame["branch"].unique():
        part = frame[frame["branch"] == branch]
        style = _style(branch)
        ax.scatter(
            100 * part["accuracy_change"],
            part[column],
            color=style["color"],
            marker=style["marker"],
            label=style["label"],
            s=28,
            alpha=0.85,
        )
    # Lower right: with a positive correlation the points run from lower left to upper right.
    box = {"facecolor": "white", "alpha": 0.8, "linewidth": 0.5}
    ax.text(0.98, 0.02, note, transform=ax.transAxes, fontsize=8, va="bottom", ha="right", bbox=box)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("accuracy change vs dense, same seed (points)")
    ax.set_ylabel(f"{method_name(method)} rank corr. with dense")
    ax.set_title(f"{method_name(method)}: accuracy change vs explanation consistency")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def plot_scatter(summary: pd.DataFrame, findings: dict[str, Any]) -> Figure:
    """Accuracy change vs dense vs consistency with dense (rank correlation), per method, with the
    within-seed correlation of the findings (the points of one seed are not independent)."""
    frame = add_accuracy_change(summary)
    frame = frame[frame["round"] > DENSE_ROUND]
    methods = [
        m for m in consistency_methods(summary) if consistency_column("dense", m, HEADLINE_METRIC) in frame
    ]
    fig, axes = plt.subplots(1, len(methods), figsize=(5.0 * len(methods), 4.2), squeeze=False)
    correlations = {c["column"]: c for c in findings["correlations"]}
    for ax, method in zip(axes.flat, methods, strict=True):
        note = _correlation_note(correlations.get(consistency_column("dense", method, HEADLINE_METRIC)))
        _scatter_panel(ax, frame, method, note)
    fig.tight_layout()
    return fig
