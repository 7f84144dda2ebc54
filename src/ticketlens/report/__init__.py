"""The reports: figures and report.md per dataset, and the study report across datasets.

Only the two entry points live here, with the file reading they need; the text is built in `markdown` and
`sentences` (from findings.json numbers only) and the figures in `figures` and `grids`. matplotlib is
imported only when figures are built.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ticketlens.errors import UserError
from ticketlens.fileio import atomic_write_text, load_npz, write_json
from ticketlens.report.headline import headline
from ticketlens.report.markdown import STUDY_INTRO, dataset_markdown, study_dataset_markdown
from ticketlens.study import Ticket, branch_order

__all__ = ["build_dataset_report", "build_study_report"]

log = logging.getLogger(__name__)

ACCURACY_FIGURE = "accuracy_vs_remaining"  # also named by the dvc.yaml plots
MapSets = dict[tuple[str, int], dict[str, np.ndarray]]


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path} not found (run `ticketlens summarize-dataset` first)")
    return pd.read_csv(path)


def _read_json(path: Path, hint: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path} not found (run `ticketlens summarize-dataset`{hint} first)")
    return json.loads(path.read_text())


def load_gallery_inputs(
    data: Path, saliency_maps: list[Path], seed: int
) -> tuple[np.ndarray, MapSets, list[str] | None]:
    """Probe images from data.pt and the map sets (saliency.npz) of one seed's tickets, in branch-round order."""
    from ticketlens.data.prepared import load_prepared  # lazy: torch, for the dataset report only

    tickets = [(Ticket.from_folder(Path(path).parent), Path(path)) for path in saliency_maps]
    of_seed = sorted(
        ((t, path) for t, path in tickets if t.seed == seed),
        key=lambda pair: (branch_order(pair[0].branch), pair[0].round),
    )
    maps: MapSets = {}
    for ticket, path in of_seed:
        if not path.is_file():
            raise UserError(f"{path} not found (run the explain step first)")
        maps[(ticket.branch, ticket.round)] = load_npz(path, "saliency maps")
    if not maps:
        raise UserError(f"no saliency maps of seed {seed} among the {len(saliency_maps)} given")
    prepared = load_prepared(data)
    probe = np.asarray(next(iter(maps.values()))["probe"], dtype=np.int64)
    return prepared.images[probe].numpy(), maps, list(prepared.class_names)


def load_forgetting_inputs(
    data: Path, image_maps: list[Path], most_forgotten: list[dict[str, Any]]
) -> tuple[dict[int, np.ndarray], dict[tuple[int, int], dict[str, np.ndarray]], list[str]]:
    """The forgetting gallery's images (from data.pt) and the ticket branch's images.npz of the seeds shown."""
    from ticketlens.data.prepared import load_prepared  # lazy: torch, for the dataset report only

    seeds = {item["seed"] for item in most_forgotten}
    maps = {}
    for path in map(Path, image_maps):
        ticket = Ticket.from_folder(path.parent)
        if ticket.seed in seeds:
            if not path.is_file():
                raise UserError(f"{path} not found (run the explain_images step first)")
            maps[(ticket.seed, ticket.round)] = load_npz(path, "image maps")
    prepared = load_prepared(data)
    images = {item["image"]: prepared.images[item["image"]].numpy() for item in most_forgotten}
    return images, maps, list(prepared.class_names)


def _write_figures(
    folder: Path,
    summary: pd.DataFrame,
    tcav: pd.DataFrame,
    findings: dict[str, Any],
    data: Path,
    saliency_maps: list[Path],
    image_maps: list[Path],
) -> list[str]:
    """Write every figure into `folder`; return their names (file stems) in report order."""
    from ticketlens.report import figures, grids  # lazy: matplotlib, which the study report never needs

    names: list[str] = []

    def keep(fig: Any, name: str) -> None:
        figures.save_figure(fig, folder, name)
        names.append(name)

    keep(figures.plot_accuracy(summary, findings), ACCURACY_FIGURE)
    for method in figures.consistency_methods(summary):
        keep(figures.plot_consistency(summary, method, findings), f"consistency_{method}")
    seed = int(findings["seeds"][0])
    images, maps, class_names = load_gallery_inputs(data, saliency_maps, seed)
    keep(grids.plot_gallery(images, maps, class_names, seed), "gallery")
    forgetting = findings.get("forgetting") or {}
    if forgetting and image_maps:
        shown = forgetting["most_forgotten"][: grids.FORGOTTEN_SHOWN]
        pictures, image_sets, class_names = load_forgetting_inputs(data, image_maps, shown)
        keep(grids.plot_forgetting_gallery(shown, pictures, image_sets, class_names), "forgetting_gallery")
    if not tcav.empty:
        for group in grids.heatmap_groups(tcav):
            whole = len(group) == len(tcav["target_class"].unique())
            name = "tcav" if whole else f"tcav_{group[0]}-{group[-1]}"
            alpha = findings.get("tcav_alpha", findings["alpha"])
            keep(grids.plot_tcav_heatmap(tcav, group, class_names, alpha), name)
    if figures.consistency_methods(summary):
        keep(figures.plot_scatter(summary, findings), "scatter_accuracy_consistency")
    return names


def build_dataset_report(
    dataset: str,
    summary: Path,
    tcav_summary: Path,
    findings: Path,
    data: Path,
    saliency_maps: list[Path],
    report: Path,
    figures: Path,
    image_maps: list[Path] | None = None,
) -> Path:
    """Figures into `figures` (a folder) and `report` (report.md); returns the report path.

    `data` is the prepared data.pt (the gallery's probe images); `saliency_maps` are the tickets'
    saliency.npz, of which the gallery shows the first seed's; `image_maps` the ticket branch's images.npz,
    from which the forgetting gallery shows the most-forgotten explained images.
    """
    table = _read_csv(Path(summary))
    tcav = _read_csv(Path(tcav_summary))
    result = _read_json(Path(findings), "")
    names = _write_figures(
        Path(figures), table, tcav, result, Path(data), [Path(p) for p in saliency_maps],
        [Path(p) for p in image_maps or []],
    )  # fmt: skip
    # report.md links its figures as figures/{name}.png: the folder given is expected beside it.
    atomic_write_text(Path(report), dataset_markdown(dataset, table, result, names))
    log.info("%s: report %s with %d figures", dataset, report, len(names))
    return Path(report)


def build_study_report(
    findings: list[Path],
    metrics: list[Path],
    reports: list[Path],
    report: Path,
    metrics_out: Path,
    summary_out: Path,
) -> Path:
    """`report` across datasets, `metrics_out` keyed by dataset (for `dvc metrics`) and `summary_out`: the
    report's path and one headline per dataset, also printed to stdout."""
    report = Path(report)
    merged: dict[str, Any] = {}
    lines, headlines = list(STUDY_INTRO), []
    for findings_path, metrics_path in zip(map(Path, findings), map(Path, metrics), strict=True):
        folder = findings_path.parent
        result = _read_json(findings_path, f" for {folder.name}")
        dataset = result.get("dataset") or folder.name
        merged[dataset] = _read_json(metrics_path, f" for {folder.name}")
        line = headline(result)
        headlines.append(line)
        # Links relative to the study report, so the results folder can be moved or browsed as a whole.
        rel = os.path.relpath(folder, report.parent)
        figure = folder / "figures" / f"{ACCURACY_FIGURE}.png"
        figure_link = f"{rel}/figures/{ACCURACY_FIGURE}.png" if figure.is_file() else None
        lines += study_dataset_markdown(dataset, result, line, f"{rel}/report.md", figure_link)
    atomic_write_text(report, "\n".join(lines) + "\n")
    write_json(merged, Path(metrics_out))
    # The short summary goes to stdout and to summary.txt, which `make run` prints at the end.
    summary = [f"Report: {report} (per dataset: {', '.join(str(Path(r)) for r in reports)})", *headlines]
    atomic_write_text(Path(summary_out), "\n".join(summary) + "\n")
    print("\n".join(summary))
    return report
