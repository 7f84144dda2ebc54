"""The report's figures that are grids of images: TCAV scores per target class (concept x branch-round)
and the gallery of attribution maps (probe image x branch-round). Like `figures`, each returns its Figure."""

from __future__ import annotations

import math
import textwrap
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ticketlens.analysis.associations import concept_significance
from ticketlens.analysis.tables import order_branches
from ticketlens.report import figures as _setup  # noqa: F401  (the Agg backend and reproducible rcParams)
from ticketlens.study import BRANCH_SHORT

GALLERY_PROBES = 6
CLASSES_PER_HEATMAP = 6


def _class_label(target: Any, class_names: list[str] | None) -> str:
    if class_names is not None:
        try:
            return f"{class_names[int(target)]}"
        except (ValueError, IndexError, TypeError):
            pass
    return str(target)


def _branch_short(branch: str) -> str:
    return BRANCH_SHORT.get(branch, branch)


# ------------------------------------------------------------------------------------ TCAV heatmap


def heatmap_groups(tcav_summary: pd.DataFrame) -> list[list[Any]]:
    classes = sorted(tcav_summary["target_class"].unique(), key=lambda c: (str(type(c)), c))
    return [classes[i : i + CLASSES_PER_HEATMAP] for i in range(0, len(classes), CLASSES_PER_HEATMAP)]


def _heatmap_grid(
    part: pd.DataFrame, rows: list[tuple[str, str]], columns: list[tuple[str, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Seed-mean scores (concept @ layer x branch-round) and where the majority of seeds is significant."""
    grid = np.full((len(rows), len(columns)), np.nan)
    marks = np.zeros_like(grid, dtype=bool)
    index = {key: i for i, key in enumerate(rows)}
    col_index = {key: j for j, key in enumerate(columns)}
    for rec in part.itertuples(index=False):
        i, j = index[(rec.concept, rec.layer)], col_index[(rec.branch, rec.round)]
        grid[i, j], marks[i, j] = rec.mean, bool(rec.significant)
    return grid, marks


def _heatmap_panel(
    ax: Any, grid: np.ndarray, marks: np.ndarray, rows: list[tuple[str, str]], columns: list[tuple[str, int]]
) -> Any:
    image = ax.imshow(grid, cmap="RdBu_r", vmin=0, vmax=1, aspect="auto")
    for i, j in zip(*np.nonzero(marks), strict=True):
        # White on the saturated ends of the colour map, black in the pale middle: always visible.
        colour = "white" if abs(grid[i, j] - 0.5) > 0.3 else "black"
        ax.text(j, i, "*", ha="center", va="center", fontsize=14, fontweight="bold", color=colour)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([f"{_branch_short(b)} r{r}" for b, r in columns], rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{c} @ {layer}" for c, layer in rows], fontsize=8)
    first_col = ax.get_subplotspec().is_first_col()
    ax.tick_params(axis="y", labelleft=first_col)
    # Separate the branches so the equal-sparsity comparison is easy to read.
    for j in range(1, len(columns)):
        if columns[j][0] != columns[j - 1][0]:
            ax.axvline(j - 0.5, color="black", linewidth=1.2)
    ax.set_xlabel("branch and pruning round")
    if first_col:
        ax.set_ylabel("concept @ layer")
    return image


def plot_tcav_heatmap(
    tcav_summary: pd.DataFrame, classes: list[Any], class_names: list[str] | None, alpha: float
) -> Figure:
    """Concepts (x layer) by branch-round, one panel per target class; '*' marks significance.

    Colour is the seed-mean TCAV score (0.5 = no directional preference); '*' where more than half of the
    seeds find the concept significant (the calibrated permutation test, Holm per ticket; see tcav_significance).
    """
    table = concept_significance(tcav_summary)
    branch_rounds = order_branches(table[["branch", "round"]].drop_duplicates())
    columns = list(branch_rounds.itertuples(index=False, name=None))
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
        grid, marks = _heatmap_grid(table[table["target_class"] == target], rows, columns)
        image = _heatmap_panel(ax, grid, marks, rows, columns)
        ax.set_title(f"target class: {_class_label(target, class_names)}")
    for ax in list(axes.flat)[len(classes) :]:
        fig.delaxes(ax)
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes.flat[: len(classes)]), shrink=0.8)
        bar.set_label("TCAV score (seed mean)")
    fig.suptitle(
        f"TCAV scores; * = significant (permutation test, Holm per ticket, alpha {alpha:g}, majority of seeds)"
    )
    return fig


# ----------------------------------------------------------------------------------------- gallery


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


def _gallery_cell(
    ax: Any,
    picture: np.ndarray,
    cmap: str | None,
    npz: dict[str, np.ndarray],
    pos: int,
    label: int,
    class_names: list[str] | None,
) -> tuple[Any, str]:
    """One probe image with one ticket's map overlaid and its prediction; returns (overlay, method)."""
    method = "gradcam" if "gradcam" in npz else "saliency"
    shown = _display_map(np.asarray(npz[method][pos], dtype=float), method)
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
    return overlay, method


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
    labels = np.asarray(maps[columns[0]]["labels"])
    positions = gallery_probes(labels)
    fig, axes = plt.subplots(
        len(positions),
        len(columns) + 1,
        figsize=(1.25 * (len(columns) + 1), 1.35 * len(positions) + 0.8),
        squeeze=False,
    )
    overlay = None
    for row, pos in enumerate(positions):
        picture, cmap = _image_for_display(images[pos])
        label = int(labels[pos])
        axes[row, 0].imshow(picture, cmap=cmap)
        axes[row, 0].set_ylabel(textwrap.fill(_class_label(label, class_names), 14), fontsize=7)
        for col, (branch, r) in enumerate(columns, start=1):
            overlay, method = _gallery_cell(
                axes[row, col], picture, cmap, maps[(branch, r)], pos, label, class_names
            )
            if row == 0:
                kind = "CAM" if method == "gradcam" else "grad"
                axes[row, col].set_title(f"{_branch_short(branch)} r{r}\n{kind}", fontsize=8)
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


# ------------------------------------------------------------------------------ forgetting gallery

FORGOTTEN_SHOWN = 6


def plot_forgetting_gallery(
    most_forgotten: list[dict[str, Any]],
    images: dict[int, np.ndarray],
    maps: dict[tuple[int, int], dict[str, np.ndarray]],
    class_names: list[str] | None,
) -> Figure:
    """The most-forgotten explained test images (rows): the image, the dense net's map and the ticket's maps
    at the rounds around the round its seed first forgets it (r - 1, r, r + 1 where they exist).

    `most_forgotten`: findings.json `forgetting.most_forgotten`; `images[index]`: the C x H x W uint8 image;
    `maps[(seed, round)]`: that ticket's images.npz. Grad-CAM where the model has it, else saliency."""
    shown = most_forgotten[:FORGOTTEN_SHOWN]
    offsets = (-1, 0, 1)
    fig, axes = plt.subplots(
        max(1, len(shown)), 2 + len(offsets), figsize=(1.5 * (2 + len(offsets)), 1.5 * max(1, len(shown)) + 0.9),
        squeeze=False,
    )  # fmt: skip
    overlay = None
    for row, item in enumerate(shown):
        picture, cmap = _image_for_display(images[item["image"]])
        axes[row, 0].imshow(picture, cmap=cmap)
        label = _class_label(item["label"], class_names)
        axes[row, 0].set_ylabel(textwrap.fill(f"#{item['image']} {label}", 14), fontsize=7)
        axes[row, 0].set_title(f"forgotten {100 * item['frequency']:.0f}%", fontsize=7)
        rounds = [0] + [item["first_round"] + k for k in offsets]
        for col, r in enumerate(rounds, start=1):
            ax = axes[row, col]
            npz = maps.get((item["seed"], r))
            if npz is None or (r == 0 and col > 1) or (col > 1 and r <= 0):
                ax.axis("off")
                continue
            method = "gradcam" if "gradcam" in npz else "saliency"
            pos = int(np.flatnonzero(np.asarray(npz["images"]) == item["image"])[0])
            ax.imshow(picture, cmap=cmap)
            height, width = picture.shape[:2]
            overlay = ax.imshow(
                _display_map(np.asarray(npz[method][pos], dtype=float), method), cmap="jet", alpha=0.5,
                vmin=0, vmax=1, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
            )  # fmt: skip
            kind = "CAM" if method == "gradcam" else "grad"
            ax.set_title(("dense" if r == 0 else f"s{item['seed']} r{r}") + f" {kind}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no explained image is forgotten", ha="center", va="center", fontsize=8)
    if overlay is not None:
        bar = fig.colorbar(overlay, ax=list(axes.flat), shrink=0.6, pad=0.01)
        bar.set_label("attribution (per-map max = 1)")
    fig.suptitle(
        textwrap.fill("Most-forgotten test images: the dense net's map and the ticket's around the round its "
                      "seed first forgets the image", 60), fontsize=9,
    )  # fmt: skip
    return fig
