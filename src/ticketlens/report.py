"""Figures, report.md and the cross-dataset report, all generated from the analysis tables.

Every plotting function takes tables and returns the matplotlib Figure (so tests can inspect labels,
legends and data); `save_figure` writes it as PNG + SVG atomically. Sentences in report.md are built
from findings.json numbers by `finding_sentences`: the report makes no claim the analysis did not compute.
"""

from __future__ import annotations

import json
import logging
import math
import os
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, works on headless machines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from ticketlens.analysis import (  # noqa: E402
    CONSISTENCY_METRICS,
    DENSE_ROUND,
    TICKET,
    add_accuracy_change,
    aggregate,
    atomic_write_text,
    concept_significance,
    split_consistency_column,
    with_dense_rows,
    write_json,
)
from ticketlens.errors import UserError  # noqa: E402
from ticketlens.fileio import atomic_write  # noqa: E402

log = logging.getLogger(__name__)

BRANCH_STYLE = {
    TICKET: {"color": "#1b6ca8", "marker": "o", "linestyle": "-", "label": "ticket (IMP, rewound)"},
    "reinit": {"color": "#d1495b", "marker": "s", "linestyle": "--", "label": "control: random re-init"},
    "randmask": {"color": "#6a994e", "marker": "^", "linestyle": ":", "label": "control: random mask"},
}
METHOD_NAMES = {"gradcam": "Grad-CAM", "saliency": "gradient saliency"}
METRIC_NAMES = {
    "spearman_abs": "Spearman rank corr. of |map|",
    "spearman_signed": "Spearman rank corr., signed",
    "iou_top10": "top-10% IoU",
    "iou_top20": "top-20% IoU",
    "ssim": "SSIM",
}
BRANCH_SHORT = {TICKET: "ticket", "reinit": "reinit", "randmask": "rmask"}  # column headers
BRANCH_NOUNS = {TICKET: "tickets", "reinit": "random re-init control", "randmask": "random-mask control"}
GALLERY_PROBES = 6
CLASSES_PER_HEATMAP = 6

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9})
# Byte-identical figures for identical results: SVG element ids from a fixed salt, no creation dates.
plt.rcParams["svg.hashsalt"] = "ticketlens"
NO_DATE = {"svg": {"Date": None}, "png": {}}


def _style(branch: str) -> dict[str, str]:
    return BRANCH_STYLE.get(branch, {"color": "grey", "marker": "x", "linestyle": "-", "label": branch})


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


# ----------------------------------------------------------------------------------------- saving


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


# ------------------------------------------------------------------------------------------ figures


def plot_accuracy(summary: pd.DataFrame, findings: dict[str, Any]) -> Figure:
    """Test accuracy vs weights remaining: tickets vs controls, seed intervals, dense band."""
    agg = aggregate(with_dense_rows(summary))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for branch in agg["branch"].unique():
        _branch_curve(ax, agg, "test_accuracy", branch, scale=100, bounds=(0.0, 1.0))
    match = findings["accuracy_match"]
    if match.get("dense_ci_low") is not None:
        ax.axhspan(
            100 * max(match["dense_ci_low"], 0.0),
            100 * min(match["dense_ci_high"], 1.0),
            color="grey",
            alpha=0.15,
            label="dense net, 95% interval",
        )
    elif match.get("dense_accuracy") is not None:
        ax.axhline(100 * match["dense_accuracy"], color="grey", linestyle="-.", label="dense net (one seed)")
    last = match.get("last_matching_remaining")
    if last is not None:
        ax.axvline(
            100 * last,
            color="black",
            linewidth=0.8,
            linestyle=(0, (4, 2)),
            label=f"last matching round ({100 * last:.3g}% left)",
        )
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
    methods: list[str] = []
    for column in columns:
        method = split_consistency_column(column)[1]
        if method not in methods:
            methods.append(method)
    return methods


def plot_consistency(summary: pd.DataFrame, method: str, n_seeds: int) -> Figure:
    """One panel per similarity metric: consistency with the dense net vs weights remaining.

    The dashed floor is the dense net compared with its own weight-randomised copy (round 0 rows with
    reference=random): consistency at that level means the maps no longer carry the dense net's evidence.
    """
    metrics = [m for m in CONSISTENCY_METRICS if f"cons_dense_{method}_{m}" in summary]
    agg = aggregate(with_dense_rows(summary))
    dense = summary[(summary["branch"] == TICKET) & (summary["round"] == DENSE_ROUND)]
    ncols = 3 if len(metrics) > 2 else len(metrics)
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for branch in agg["branch"].unique():
            _branch_curve(ax, agg, f"cons_dense_{method}_{metric}", branch)
        floor_column = f"cons_random_{method}_{metric}"
        if floor_column in dense and dense[floor_column].notna().any():
            ax.axhline(
                float(dense[floor_column].mean()),
                color="black",
                linestyle="--",
                linewidth=1,
                label="floor: dense vs randomised weights",
            )
        _percent_axis(ax, list(agg["remaining_fraction_mean"]))
        ax.set_ylabel("similarity with the dense net")
        ax.set_title(metric_name(metric))
    for ax in list(axes.flat)[len(metrics) :]:
        fig.delaxes(ax)  # no empty panels in print
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(4, len(labels)),
        frameon=False,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.suptitle(f"{method_name(method)} consistency with the dense net ({_interval_note(n_seeds)})")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def _class_label(target: Any, class_names: list[str] | None) -> str:
    if class_names is not None:
        try:
            return f"{class_names[int(target)]}"
        except (ValueError, IndexError, TypeError):
            pass
    return str(target)


def heatmap_groups(tcav_summary: pd.DataFrame) -> list[list[Any]]:
    classes = sorted(tcav_summary["target_class"].unique(), key=lambda c: (str(type(c)), c))
    return [classes[i : i + CLASSES_PER_HEATMAP] for i in range(0, len(classes), CLASSES_PER_HEATMAP)]


def plot_tcav_heatmap(
    tcav_summary: pd.DataFrame, classes: list[Any], class_names: list[str] | None, alpha: float
) -> Figure:
    """Concepts (x layer) by branch-round, one panel per target class; '*' marks significance.

    Colour is the seed-mean TCAV score (0.5 = no directional preference); '*' where more than half of the
    seeds find the concept significant (Bonferroni-corrected t-test against random-vs-random CAVs).
    """
    table = concept_significance(tcav_summary)
    columns = (
        table[["branch", "round"]]
        .drop_duplicates()
        .assign(_k=lambda f: f["branch"].map({TICKET: 0, "reinit": 1, "randmask": 2}).fillna(9))
        .sort_values(["_k", "round"])[["branch", "round"]]
        .itertuples(index=False, name=None)
    )
    columns = list(columns)
    rows = sorted({(c, layer) for c, layer in table[["concept", "layer"]].itertuples(index=False, name=None)})
    ncols = min(3, len(classes))
    nrows = math.ceil(len(classes) / ncols)
    width = max(4.0, 0.45 * len(columns) + 2.5)
    # Constrained layout keeps the long concept labels of one panel clear of its neighbour.
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(width * ncols + 3.0, 0.45 * len(rows) * nrows + 1.8 * nrows),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, target in zip(axes.flat, classes, strict=False):
        grid = np.full((len(rows), len(columns)), np.nan)
        marks = np.zeros_like(grid, dtype=bool)
        part = table[table["target_class"] == target]
        index = {key: i for i, key in enumerate(rows)}
        col_index = {key: j for j, key in enumerate(columns)}
        for rec in part.itertuples(index=False):
            i, j = index[(rec.concept, rec.layer)], col_index[(rec.branch, rec.round)]
            grid[i, j], marks[i, j] = rec.mean, bool(rec.significant)
        image = ax.imshow(grid, cmap="RdBu_r", vmin=0, vmax=1, aspect="auto")
        for i, j in zip(*np.nonzero(marks), strict=True):
            # White on the saturated ends of the colour map, black in the pale middle: always visible.
            colour = "white" if abs(grid[i, j] - 0.5) > 0.3 else "black"
            ax.text(j, i, "*", ha="center", va="center", fontsize=14, fontweight="bold", color=colour)
        ax.set_xticks(range(len(columns)))
        ax.set_xticklabels([f"{BRANCH_SHORT.get(b, b)} r{r}" for b, r in columns], rotation=90, fontsize=8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{c} @ {layer}" for c, layer in rows], fontsize=8)
        ax.tick_params(axis="y", labelleft=ax.get_subplotspec().is_first_col())
        # Separate the branches so the equal-sparsity comparison is easy to read.
        for j in range(1, len(columns)):
            if columns[j][0] != columns[j - 1][0]:
                ax.axvline(j - 0.5, color="black", linewidth=1.2)
        ax.set_xlabel("branch and pruning round")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("concept @ layer")
        ax.set_title(f"target class: {_class_label(target, class_names)}")
    for ax in list(axes.flat)[len(classes) :]:
        fig.delaxes(ax)
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes.flat[: len(classes)]), shrink=0.8)
        bar.set_label("TCAV score (seed mean)")
    fig.suptitle(f"TCAV scores; * = significant (Bonferroni, alpha {alpha:g}, majority of seeds)")
    return fig


def _display_map(raw: np.ndarray, method: str) -> np.ndarray:
    """Normalise a raw map to [0, 1] for display only (raw magnitudes stay in saliency.npz).

    Grad-CAM keeps its positive part (evidence for the class, as with the usual ReLU); gradient saliency
    uses magnitudes. Each map is scaled by its own maximum so weak and strong maps are both visible.
    """
    shown = np.clip(raw, 0, None) if method == "gradcam" else np.abs(raw)
    top = float(shown.max()) if shown.size else 0.0
    return shown / top if top > 0 else shown


def _image_for_display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """C x H x W uint8 -> H x W (gray) or H x W x 3 in [0, 1]."""
    scaled = image.astype(float) / 255.0
    if scaled.shape[0] == 1:
        return scaled[0], "gray"
    return np.transpose(scaled[:3], (1, 2, 0)), None


def gallery_probes(labels: np.ndarray, k: int = GALLERY_PROBES) -> list[int]:
    """Positions in the probe set: one per class first (so classes differ), then fill up in order."""
    chosen: list[int] = []
    for label in dict.fromkeys(labels.tolist()):
        chosen.append(int(np.flatnonzero(labels == label)[0]))
        if len(chosen) == k:
            return chosen
    rest = [i for i in range(len(labels)) if i not in chosen]
    return chosen + rest[: k - len(chosen)]


def plot_gallery(
    images: np.ndarray,
    maps: dict[tuple[str, int], dict[str, np.ndarray]],
    class_names: list[str] | None,
    seed: int,
) -> Figure:
    """Probe images (rows) x branch-round (columns) with the attribution map overlaid.

    `images`: N x C x H x W uint8 probe images; `maps[(branch, round)]` is the loaded saliency.npz of that
    ticket. Grad-CAM where the model has it, else gradient saliency (the column title says which).
    """
    columns = list(maps)
    first = maps[columns[0]]
    positions = gallery_probes(np.asarray(first["labels"]))
    fig, axes = plt.subplots(
        len(positions),
        len(columns) + 1,
        figsize=(1.25 * (len(columns) + 1), 1.35 * len(positions) + 0.8),
        squeeze=False,
    )
    overlay = None
    for row, pos in enumerate(positions):
        picture, cmap = _image_for_display(images[pos])
        label = int(np.asarray(first["labels"])[pos])
        axes[row, 0].imshow(picture, cmap=cmap)
        axes[row, 0].set_ylabel(textwrap.fill(_class_label(label, class_names), 14), fontsize=7)
        for col, key in enumerate(columns, start=1):
            npz = maps[key]
            method = "gradcam" if "gradcam" in npz else "saliency"
            shown = _display_map(np.asarray(npz[method][pos], dtype=float), method)
            ax = axes[row, col]
            ax.imshow(picture, cmap=cmap)
            height, width = picture.shape[:2]
            overlay = ax.imshow(
                shown, cmap="jet", alpha=0.5, vmin=0, vmax=1, extent=(-0.5, width - 0.5, height - 0.5, -0.5)
            )
            pred = int(np.asarray(npz["preds"])[pos])
            ax.text(
                0.03,
                0.97,
                _class_label(pred, class_names)[:12],
                transform=ax.transAxes,
                fontsize=6,
                va="top",
                color="white" if pred == label else "yellow",
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0},
            )
            if row == 0:
                ax.set_title(
                    f"{BRANCH_SHORT.get(key[0], key[0])} r{key[1]}\n{'CAM' if method == 'gradcam' else 'grad'}",
                    fontsize=8,
                )
    axes[0, 0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if overlay is not None:
        bar = fig.colorbar(overlay, ax=list(axes.flat), shrink=0.6, pad=0.01)
        bar.set_label("attribution (per-map max = 1)")
    title = f"Attribution maps of the probe images, seed {seed} (text: predicted class; yellow = wrong)"
    # Wrap so a narrow gallery (few rounds) keeps its title inside the figure.
    fig.suptitle(textwrap.fill(title, max(45, 11 * (len(columns) + 1))))
    return fig


def plot_scatter(summary: pd.DataFrame, findings: dict[str, Any]) -> Figure:
    """Accuracy change vs dense vs consistency with dense (rank correlation), per method, with the r."""
    frame = add_accuracy_change(summary)
    frame = frame[frame["round"] > DENSE_ROUND]
    methods = [m for m in consistency_methods(summary) if f"cons_dense_{m}_spearman_abs" in frame]
    fig, axes = plt.subplots(1, len(methods), figsize=(5.0 * len(methods), 4.2), squeeze=False)
    correlations = {(c["column"], c["scope"]): c for c in findings["correlations"]}
    for ax, method in zip(axes.flat, methods, strict=True):
        column = f"cons_dense_{method}_spearman_abs"
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
        lines = []
        for scope, name in (("ticket", "tickets"), ("all", "all branches")):
            c = correlations.get((column, scope))
            if c and c["spearman_rho"] is not None and np.isfinite(c["spearman_rho"]):
                lines.append(
                    f"{name}: Spearman rho {c['spearman_rho']:.2f}, {_p(c['spearman_p'])}, n {c['n']}"
                )
            elif c:
                lines.append(f"{name}: n {c['n']}, correlation undefined")
        # Lower right: with a positive correlation the points run from lower left to upper right.
        ax.text(
            0.98,
            0.02,
            "\n".join(lines),
            transform=ax.transAxes,
            fontsize=8,
            va="bottom",
            ha="right",
            bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0.5},
        )
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("accuracy change vs dense, same seed (points)")
        ax.set_ylabel(f"{method_name(method)} rank corr. with dense")
        ax.set_title(f"{method_name(method)}: accuracy change vs explanation consistency")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ sentences


def _p(p: float | None) -> str:
    """'p = 0.003' or 'p < 1e-4' (p-values that small are not resolved by a handful of seeds anyway)."""
    if p is None or not np.isfinite(p):
        return "p n/a"
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def _pct(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.3g}%"


def _acc(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def accuracy_sentences(findings: dict[str, Any]) -> list[str]:
    m = findings["accuracy_match"]
    n = findings["n_seeds"]
    if m.get("dense_ci_low") is not None:
        interval = f"95% t-interval {_acc(m['dense_ci_low'])} to {_acc(m['dense_ci_high'])} over {n} seeds"
    else:
        interval = "one seed, so no interval: matching uses a fixed tolerance of one accuracy point"
    out = [f"The dense network reaches {_acc(m['dense_accuracy'])} test accuracy ({interval})."]
    last, first = m["last_matching_round"], m["first_failing_round"]
    if first is None:
        out.append(
            f"Tickets match the dense accuracy at every pruning round, down to round {last} "
            f"({_pct(m['last_matching_remaining'])} of weights remaining)."
        )
    elif last == DENSE_ROUND:
        out.append(
            f"Already the first pruned ticket (round {first}, {_pct(m['first_failing_remaining'])} of weights "
            "remaining) falls below the dense accuracy."
        )
    else:
        out.append(
            f"Tickets match the dense accuracy up to round {last} ({_pct(m['last_matching_remaining'])} of "
            f"weights remaining); round {first} ({_pct(m['first_failing_remaining'])}) is the first that does not."
        )
    out.append(f"Matching criterion: {m['criterion']}.")
    return out


def onset_sentences(findings: dict[str, Any]) -> list[str]:
    out = []
    for o in findings["consistency_onset"]:
        if o["metric"] != "spearman_abs":
            continue  # the table lists every metric; sentences keep to the headline metric per method
        what = f"{method_name(o['method'])} consistency with the dense net ({metric_name(o['metric'])})"
        if o["baseline_mean"] is None:
            continue
        start = f"{what} is {o['baseline_mean']:.2f} at round 1"
        acc = o["accuracy_first_failing_round"]
        acc_text = f"accuracy first fails at round {acc}" if acc is not None else "accuracy never fails"
        if o["first_drop_round"] is None:
            out.append(f"{start} and does not fall further within the studied rounds; {acc_text}.")
        else:
            out.append(
                f"{start} and starts falling at round {o['first_drop_round']} "
                f"({_pct(o['first_drop_remaining'])} of weights remaining): {o['relation']} accuracy ({acc_text})."
            )
    return out


def correlation_sentences(findings: dict[str, Any]) -> list[str]:
    out = []
    for c in findings["correlations"]:
        if c["metric"] != "spearman_abs" or c["scope"] != "ticket":
            continue
        what = f"{method_name(c['method'])} consistency ({metric_name(c['metric'])})"
        if c["spearman_rho"] is None:
            out.append(f"The correlation between accuracy change and {what} is undefined (n = {c['n']}).")
            continue
        verdict = "significant" if c["significant"] else "not significant"
        out.append(
            f"Across pruned tickets, accuracy change and {what} have Spearman rho = {c['spearman_rho']:.2f} "
            f"({_p(c['spearman_p'])}, n = {c['n']}; {verdict} at alpha {findings['alpha']:g}); "
            f"Pearson r = {c['pearson_r']:.2f} ({_p(c['pearson_p'])})."
        )
    return out


def concept_sentences(findings: dict[str, Any], limit: int = 8) -> list[str]:
    dense = findings["concepts_dense_significant"]
    names = sorted({d["concept"] for d in dense})
    out = [
        f"The dense network has {len(dense)} significant concept-layer-class "
        + ("combination" if len(dense) == 1 else "combinations")
        + (f" (concepts: {', '.join(names)})." if names else ".")
    ]
    changes = findings["concept_changes"]
    if not changes:
        out.append("No concept loses or gains significance in any branch.")
        return out
    for ch in sorted(changes, key=lambda c: (c["branch"] != TICKET, c["round"]))[:limit]:
        verb = "loses" if ch["change"] == "lost" else "gains"
        out.append(
            f"{BRANCH_NOUNS.get(ch['branch'], ch['branch'])}: concept {ch['concept']} (layer {ch['layer']}, class {ch['target_class']}) {verb} "
            f"significance at round {ch['round']} ({_pct(ch['remaining'])} remaining; score "
            f"{ch['dense_score']:.2f} dense, {ch['score']:.2f} then)."
        )
    if len(changes) > limit:
        out.append(f"{len(changes) - limit} further changes are listed in the table below.")
    return out


def control_sentences(findings: dict[str, Any]) -> list[str]:
    out = []
    head = findings.get("headline_consistency")
    last = findings["rounds"]
    for g in findings["control_gaps"]:
        if g["round"] != last or g["metric"] not in ("test_accuracy", head):
            continue
        if g["mean_gap"] is None:
            continue
        # Accuracy gaps are stated in percentage points, consistency gaps in the metric's own units.
        scale, unit = (100.0, " points") if g["metric"] == "test_accuracy" else (1.0, "")
        if g["metric"] == "test_accuracy":
            size, what = f"{abs(100 * g['mean_gap']):.2f} points", "accuracy"
        else:
            _, method, metric = split_consistency_column(g["metric"])
            size, what = (
                f"{abs(g['mean_gap']):.3f}",
                f"{method_name(method)} consistency ({metric_name(metric)})",
            )
        side = "below" if g["mean_gap"] < 0 else "above"
        ci = (
            ""
            if g["ci_low"] is None
            else f"gap 95% CI {scale * g['ci_low']:+.3g} to {scale * g['ci_high']:+.3g}{unit}; "
        )
        if g["p"] is None:
            test = f"{ci}{g['test']}, n = {g['n']}"
        else:
            test = f"{ci}{g['test']}, {_p(g['p'])}, n = {g['n']}"
        out.append(
            f"At round {g['round']} ({_pct(g['remaining'])} remaining) the {BRANCH_NOUNS.get(g['control'], g['control'])}'s {what} is "
            f"{size} {side} the ticket's ({test})."
        )
    return out


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def finding_sentences(findings: dict[str, Any]) -> dict[str, list[str]]:
    """Report sections, each a list of sentences built from findings.json numbers only."""
    sections = {
        "Accuracy": accuracy_sentences(findings),
        "When explanations drift": onset_sentences(findings) + correlation_sentences(findings),
        "Concepts": concept_sentences(findings),
        "Controls at equal sparsity": control_sentences(findings),
    }
    return {name: [_capitalise(s) for s in sentences] for name, sentences in sections.items()}


def headline(findings: dict[str, Any]) -> str:
    """One line per dataset for stdout and the study report."""
    m = findings["accuracy_match"]
    parts = [f"dense {_acc(m['dense_accuracy'])}"]
    if m["first_failing_round"] is None:
        parts.append(f"tickets match at every round (to {_pct(m['last_matching_remaining'])} weights)")
    else:
        parts.append(
            f"tickets match to {_pct(m['last_matching_remaining'])} weights (round {m['last_matching_round']}),"
            f" fail from round {m['first_failing_round']}"
        )
    head = findings.get("headline_consistency")
    for o in findings["consistency_onset"]:
        if o["column"] == head:
            if o["relation"] == "neither falls":
                parts.append(
                    f"neither accuracy nor {method_name(o['method'])} consistency falls after round 1"
                )
            else:
                parts.append(f"{method_name(o['method'])} consistency falls {o['relation']} accuracy")
    return f"{findings.get('dataset')}: " + "; ".join(parts)


# --------------------------------------------------------------------------------------- markdown


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
    agg = aggregate(summary)
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
    for column, name in (
        ("tcav_rank_corr_dense", "TCAV rank corr. vs dense"),
        ("tcav_jaccard_dense", "TCAV Jaccard vs dense"),
        ("tcav_n_significant", "significant concept-layer-class"),
        ("tcav_n_changed", "concept scores changed vs dense"),
    ):
        if f"{column}_mean" in agg:
            table[name] = _with_interval(agg, column)
    return table


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


def explanation_quality_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Localisation and faithfulness (seed means), one row per branch x round x method.

    Mass inside the box / parts is shown next to their area, the mass a uniform map would have.
    """
    agg = aggregate(summary)
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


def dataset_markdown(
    dataset: str, summary: pd.DataFrame, findings: dict[str, Any], figures: list[str]
) -> str:
    lines = [f"# {dataset}: do lottery tickets use the same evidence as the dense network?", ""]
    lines.append(
        f"Seeds: {', '.join(map(str, findings['seeds']))}; pruning rounds: {findings['rounds']}; controls: "
        f"{', '.join(findings['controls']) or 'none'}; intervals: {findings['interval']}. "
        "Every sentence below is generated from `findings.json`."
    )
    lines.append("")
    for section, sentences in finding_sentences(findings).items():
        lines += [f"## {section}", ""] + [f"- {s}" for s in sentences] + [""]
    lines += [
        "## Tables",
        "",
        "### Accuracy and explanation agreement per branch and round (mean [95% CI])",
        "",
    ]
    lines.append(markdown_table(overview_table(summary, findings.get("headline_consistency"))))
    quality = explanation_quality_table(summary)
    if not quality.empty:
        lines += ["### Localisation and faithfulness (seed means)", "", markdown_table(quality)]
    lines += ["### Consistency onset per metric", ""]
    lines.append(
        markdown_table(
            _records(
                findings["consistency_onset"],
                [
                    "method",
                    "metric",
                    "baseline_mean",
                    "first_drop_round",
                    "first_drop_remaining",
                    "accuracy_first_failing_round",
                    "relation",
                ],
            )
        )
    )
    lines += ["### Accuracy change vs consistency (Spearman and Pearson)", ""]
    lines.append(
        markdown_table(
            _records(
                findings["correlations"],
                [
                    "method",
                    "metric",
                    "scope",
                    "n",
                    "spearman_rho",
                    "spearman_p",
                    "pearson_r",
                    "pearson_p",
                    "significant",
                ],
            )
        )
    )
    lines += ["### Concept significance changes relative to the dense net", ""]
    lines.append(
        markdown_table(
            _records(
                findings["concept_changes"],
                [
                    "branch",
                    "concept",
                    "layer",
                    "target_class",
                    "change",
                    "round",
                    "remaining",
                    "dense_score",
                    "score",
                ],
            )
        )
    )
    lines += ["### Controls minus tickets at equal round (paired over seeds)", ""]
    gaps = _records(
        findings["control_gaps"],
        ["control", "round", "remaining", "metric", "mean_gap", "ci_low", "ci_high", "n", "p", "test"],
    )
    if not gaps.empty:
        gaps = gaps[
            gaps["metric"].isin(
                ["test_accuracy", findings.get("headline_consistency"), "tcav_rank_corr_dense"]
            )
        ]
    lines.append(markdown_table(gaps))
    lines += ["## Figures", ""]
    for name in figures:
        lines += [f"### {name}", "", f"![{name}](figures/{name}.png) ([SVG](figures/{name}.svg))", ""]
    lines.append("Full tables: `summary.csv`, `summary_agg.csv`, `tcav_summary.csv`, `findings.json`.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ entry points


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path} not found (run `ticketlens summarize` first)")
    return pd.read_csv(path)


def load_gallery_inputs(
    results: Path, summary: pd.DataFrame, seed: int
) -> tuple[np.ndarray, dict[tuple[str, int], dict[str, np.ndarray]], list[str] | None]:
    """Probe images from data.pt and every branch-round map set of one seed."""
    from ticketlens.data.prepared import load_prepared

    maps: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    rows = summary[summary["seed"] == seed]
    order = {TICKET: 0, "reinit": 1, "randmask": 2}
    keys = sorted(
        {(b, int(r)) for b, r in rows[["branch", "round"]].itertuples(index=False, name=None)},
        key=lambda k: (order.get(k[0], 9), k[1]),
    )
    for branch, r in keys:
        path = results / f"seed_{seed}" / branch / f"round_{r}" / "saliency.npz"
        if not path.is_file():
            raise UserError(f"{path} not found (run the explain step first)")
        with np.load(path) as npz:
            maps[(branch, r)] = {k: npz[k] for k in npz.files}
    data = load_prepared(results / "prepared" / "data.pt")
    probe = np.asarray(next(iter(maps.values()))["probe"], dtype=np.int64)
    images = data.images[probe].numpy()
    return images, maps, list(data.class_names)


def build_figures(
    dataset: str, results: Path, summary: pd.DataFrame, tcav: pd.DataFrame, findings: dict[str, Any]
) -> list[str]:
    """Write every figure; return their names (file stems) in report order."""
    folder = results / "figures"
    names: list[str] = []

    def keep(fig: Figure, name: str) -> None:
        save_figure(fig, folder, name)
        names.append(name)

    keep(plot_accuracy(summary, findings), "accuracy_vs_remaining")  # name used by dvc.yaml plots
    for method in consistency_methods(summary):
        keep(plot_consistency(summary, method, findings["n_seeds"]), f"consistency_{method}")
    seed = int(findings["seeds"][0])
    images, maps, class_names = load_gallery_inputs(results, summary, seed)
    keep(plot_gallery(images, maps, class_names, seed), "gallery")
    if not tcav.empty:
        for group in heatmap_groups(tcav):
            name = (
                "tcav" if len(group) == len(tcav["target_class"].unique()) else f"tcav_{group[0]}-{group[-1]}"
            )
            keep(plot_tcav_heatmap(tcav, group, class_names, findings["alpha"]), name)
    if consistency_methods(summary):
        keep(plot_scatter(summary, findings), "scatter_accuracy_consistency")
    return names


def build_dataset_report(dataset: str, results: Path, config: dict[str, Any]) -> Path:
    """Figures into results/{dataset}/figures/ and results/{dataset}/report.md; returns the report path."""
    results = Path(results)
    summary = _read_csv(results / "summary.csv")
    tcav = _read_csv(results / "tcav_summary.csv")
    findings_path = results / "findings.json"
    if not findings_path.is_file():
        raise UserError(f"{findings_path} not found (run `ticketlens summarize` first)")
    findings = json.loads(findings_path.read_text())
    names = build_figures(dataset, results, summary, tcav, findings)
    report = results / "report.md"
    atomic_write_text(report, dataset_markdown(dataset, summary, findings, names))
    log.info("%s: report %s with %d figures", dataset, report, len(names))
    return report


def build_study_report(folders: list[Path], out_dir: Path) -> Path:
    """results/report.md across datasets, results/metrics.json keyed by dataset (for `dvc metrics`) and
    results/summary.txt: the report's path and one headline per dataset, also printed to stdout."""
    out_dir = Path(out_dir)
    merged: dict[str, Any] = {}
    lines = [
        "# ticketlens: lottery tickets, explained",
        "",
        "Per-dataset headlines (generated from each dataset's `findings.json`):",
        "",
    ]
    headlines = []
    for folder in map(Path, folders):
        findings_path, metrics_path = folder / "findings.json", folder / "metrics.json"
        for path in (findings_path, metrics_path):
            if not path.is_file():
                raise UserError(f"{path} not found (run `ticketlens summarize` for {folder.name} first)")
        findings = json.loads(findings_path.read_text())
        dataset = findings.get("dataset") or folder.name
        merged[dataset] = json.loads(metrics_path.read_text())
        line = headline(findings)
        headlines.append(line)
        rel = os.path.relpath(folder, out_dir)
        lines += [f"## {dataset}", "", f"- {line}."]
        for section, sentences in finding_sentences(findings).items():
            if section in ("Accuracy", "Controls at equal sparsity"):
                lines += [f"- {s}" for s in sentences]
        lines += ["", f"Full report: [{rel}/report.md]({rel}/report.md)", ""]
        if (folder / "figures" / "accuracy_vs_remaining.png").is_file():
            lines += [f"![{dataset} accuracy]({rel}/figures/accuracy_vs_remaining.png)", ""]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    write_json(merged, out_dir / "metrics.json")
    # The short summary goes to stdout and to summary.txt, which `make run` prints at the end.
    summary = [f"Report: {report} (per dataset: {', '.join(str(Path(f) / 'report.md') for f in folders)})"]
    summary += headlines
    atomic_write_text(out_dir / "summary.txt", "\n".join(summary) + "\n")
    print("\n".join(summary))
    return report
