"""The report builds from a synthetic results tree; every figure exists, is not blank and is labelled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from test_analysis import CLASSES, CONCEPTS, ToyStudy, make_results_tree
from ticketlens.cli import main
from ticketlens.report import build_dataset_report, figures, grids, load_gallery_inputs
from ticketlens.report.sentences import accuracy_sentences, headline
from ticketlens.study import SIMILARITY_METRICS

FIGURES = [
    "accuracy_vs_remaining",
    "consistency_gradcam",
    "consistency_saliency",
    "gallery",
    "tcav",
    "scatter_accuracy_consistency",
]


def report_args(study: ToyStudy) -> list[str]:
    """`ticketlens build-dataset-report` of a synthetic tree, with the files its rule declares."""
    return [
        "build-dataset-report", "--dataset", "toy",
        "--summary", str(study.output("summary")), "--tcav-summary", str(study.output("tcav_summary")),
        "--findings", str(study.output("findings")), "--data", str(study.results / "prepared" / "data.pt"),
        "--saliency", *[str(t / "saliency.npz") for t in study.tickets],
        "--report", str(study.output("report")), "--figures", str(study.output("figures")),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    study = make_results_tree(tmp_path_factory.mktemp("report"), seeds=[0, 1, 2])
    results = study.results
    # Through the console script, as the workflow calls it, so the CLI contract is covered too.
    summarize_args = [
        "summarize-dataset", "--dataset", "toy", "--tickets", *map(str, study.tickets),
        "--concepts", *study.concepts, "--alpha", "0.05",
        "--summary", str(study.output("summary")), "--aggregate", str(study.output("summary_agg")),
        "--tcav-summary", str(study.output("tcav_summary")), "--findings", str(study.output("findings")),
        "--metrics", str(study.output("metrics")),
    ]  # fmt: skip
    assert main(summarize_args) == 0
    assert main(report_args(study)) == 0
    return {
        "results": results,
        "study": study,
        "summary": pd.read_csv(results / "summary.csv"),
        "tcav": pd.read_csv(results / "tcav_summary.csv"),
        "findings": json.loads((results / "findings.json").read_text()),
    }


def _axes_with_data(fig: Figure) -> list[Any]:
    return [ax for ax in fig.axes if ax.lines or ax.collections or ax.images or ax.patches]


def test_every_figure_exists_non_empty(built: dict[str, Any]) -> None:
    folder = built["results"] / "figures"
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (folder / f"{name}.{ext}").stat().st_size > 1000, f"{name}.{ext}"
    assert not list(folder.glob(".*")), "temporary files left behind"


@pytest.mark.parametrize("name", FIGURES)
def test_rendered_png_is_not_blank(built: dict[str, Any], name: str) -> None:
    image = mpimg.imread(built["results"] / "figures" / f"{name}.png")
    assert image.shape[0] > 200 and image.shape[1] > 200
    gray = image[..., :3].mean(axis=-1)
    assert gray.std() > 0.05, f"{name} looks blank"
    assert (gray < 0.5).mean() > 0.005, f"{name} has almost no dark (text / line) pixels"


def test_accuracy_figure_has_labels_legend_log_axis(built: dict[str, Any]) -> None:
    fig = figures.plot_accuracy(built["summary"], built["findings"])
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert "remaining" in ax.get_xlabel() and "accuracy" in ax.get_ylabel() and ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("ticket" in t for t in labels) and any("re-init" in t for t in labels)
    assert any("random mask" in t for t in labels) and any("dense" in t for t in labels)
    # three branch curves, each from the dense net (100%) to the last round, plus the interval bands
    curves = [line for line in ax.lines if line.get_label().startswith(("ticket", "control"))]
    assert len(curves) == 3 and all(len(line.get_xdata()) == 6 for line in curves)
    assert len(ax.collections) >= 3
    ticket = curves[0].get_ydata()
    assert ticket[3] > 94 and ticket[4] < 90  # the drop at round 4 is what the figure shows


def test_consistency_figure_has_a_panel_per_metric_and_the_floor(built: dict[str, Any]) -> None:
    fig = figures.plot_consistency(built["summary"], "gradcam", 3)
    assert len(fig.axes) == len(SIMILARITY_METRICS)
    assert _axes_with_data(fig) == fig.axes, "empty panel"
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() and ax.get_xscale() == "log"
        floor = [
            line for line in ax.lines if line.get_linestyle() == "--" and len(set(line.get_ydata())) == 1
        ]
        assert floor and floor[0].get_ydata()[0] < 0.1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("floor" in t for t in labels) and any("ticket" in t for t in labels)


def test_tcav_heatmap_marks_significance(built: dict[str, Any]) -> None:
    fig = grids.plot_tcav_heatmap(built["tcav"], CLASSES, ["alpha", "beta", "gamma"], 0.05)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("target class")]
    assert len(panels) == len(CLASSES) and all(ax.images for ax in panels)
    first = panels[0]
    assert first.get_title() == "target class: alpha" and first.get_xlabel() and first.get_ylabel()
    stars = [t for t in first.texts if t.get_text() == "*"]
    # stripes is significant for class 0 at both layers in ticket rounds 0-2
    assert len(stars) == 2 * 3
    grid = first.images[0].get_array()
    assert grid.shape == (len(CONCEPTS) * 2, 6 + 5 + 5)
    assert any("TCAV score" in ax.get_ylabel() for ax in fig.axes), "colorbar label"


def test_gallery_has_every_branch_round_and_overlays(built: dict[str, Any]) -> None:
    study: ToyStudy = built["study"]
    saliency = [t / "saliency.npz" for t in study.tickets]
    images, maps, names = load_gallery_inputs(study.results / "prepared" / "data.pt", saliency, seed=0)
    assert len(maps) == 6 + 5 + 5 and images.shape[0] == 6
    fig = grids.plot_gallery(images, maps, names, seed=0)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 6 * (len(maps) + 1)
    overlays = [ax for ax in panels if len(ax.images) == 2]
    assert len(overlays) == 6 * len(maps)
    titles = {ax.get_title() for ax in panels if ax.get_title()}
    assert {"ticket r0\nCAM", "reinit r1\nCAM", "rmask r5\nCAM"} <= titles


def test_gallery_falls_back_to_gradient_saliency() -> None:
    rng = np.random.default_rng(0)
    npz = {
        "saliency": rng.random((3, 8, 8)).astype(np.float32),
        "labels": np.array([0, 1, 2]),
        "preds": np.array([0, 2, 2]),
        "probe": np.arange(3),
    }
    images = rng.integers(0, 255, (3, 3, 8, 8), dtype=np.uint8)  # RGB
    fig = grids.plot_gallery(images, {("ticket", 0): npz, ("ticket", 1): npz}, None, seed=0)
    assert any(ax.get_title().endswith("grad") for ax in fig.axes)


def test_scatter_shows_points_and_correlation(built: dict[str, Any]) -> None:
    fig = figures.plot_scatter(built["summary"], built["findings"])
    assert len(fig.axes) == 2
    for ax in fig.axes:
        points = sum(len(c.get_offsets()) for c in ax.collections)
        assert points == 3 * (5 + 5 + 5)
        assert "accuracy change" in ax.get_xlabel() and ax.get_ylabel() and ax.get_legend()
        assert any("rho" in t.get_text() and "n 15" in t.get_text() for t in ax.texts)


def test_report_markdown_states_computed_findings(built: dict[str, Any]) -> None:
    results = built["results"]
    text = (results / "report.md").read_text()
    assert "up to round 3 (21.6% of weights remaining); round 4 (13%) is the first that does not" in text
    assert "starts falling at round 3" in text and "before accuracy" in text
    assert "Spearman rho = " in text and "significant at alpha 0.05" in text
    assert "concept stripes (layer features.3, class 0) loses significance at round 3" in text
    assert "random re-init control's accuracy is" in text and "paired t-test over seeds" in text
    for name in FIGURES:
        assert f"figures/{name}.png" in text
    assert "n/a [" not in text


def test_sentences_follow_the_numbers() -> None:
    findings = {
        "accuracy_match": {
            "dense_accuracy": 0.9,
            "dense_ci_low": None,
            "dense_ci_high": None,
            "last_matching_round": 5,
            "last_matching_remaining": 0.1,
            "first_failing_round": None,
            "first_failing_remaining": None,
            "criterion": "one seed",
        },
        "n_seeds": 1,
    }
    sentences = accuracy_sentences(findings)
    assert "one seed, so no interval" in sentences[0]
    assert "at every pruning round, down to round 5 (10% of weights remaining)" in sentences[1]


def test_study_report_merges_metrics_and_prints_summary(
    built: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = built["results"]
    args = ["build-study-report", "--findings", str(results / "findings.json"),
            "--metrics", str(results / "metrics.json"), "--reports", str(results / "report.md"),
            "--report", str(tmp_path / "report.md"), "--metrics-out", str(tmp_path / "metrics.json"),
            "--summary-out", str(tmp_path / "summary.txt")]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].startswith("Report: ") and str(tmp_path / "report.md") in printed[0]
    assert printed[1].startswith("toy: dense 95.00%") and "fail from round 4" in printed[1]
    assert (tmp_path / "summary.txt").read_text().strip().splitlines() == printed
    merged = json.loads((tmp_path / "metrics.json").read_text())
    assert merged["toy"] == json.loads((results / "metrics.json").read_text())
    text = (tmp_path / "report.md").read_text()
    assert "## toy" in text and "figures/accuracy_vs_remaining.png" in text


def test_single_seed_report_builds(tmp_path: Path) -> None:
    study = make_results_tree(tmp_path, seeds=[3], rounds=2, concepts=[])
    study.summarize()
    build_dataset_report(
        "toy",
        summary=study.output("summary"),
        tcav_summary=study.output("tcav_summary"),
        findings=study.output("findings"),
        data=study.results / "prepared" / "data.pt",
        saliency_maps=[t / "saliency.npz" for t in study.tickets],
        report=study.output("report"),
        figures=study.output("figures"),
    )
    results = study.results
    text = (results / "report.md").read_text()
    assert "one seed, so no interval" in text and "no test: fewer than 2 seeds" in text
    assert (results / "figures" / "accuracy_vs_remaining.png").stat().st_size > 0
    assert not (results / "figures" / "tcav.png").exists()  # no concepts configured: no heatmap


def test_missing_summary_is_a_user_error(tmp_path: Path) -> None:
    study = ToyStudy(tmp_path / "results" / "toy", [tmp_path / "results/toy/seed_0/ticket/round_0"], [])
    assert main(report_args(study)) == 2


def test_headline_when_nothing_falls() -> None:
    findings = {
        "dataset": "toy",
        "accuracy_match": {"dense_accuracy": 0.9, "first_failing_round": None, "last_matching_remaining": 0.2,
                           "last_matching_round": 3},
        "headline_consistency": "cons_dense_gradcam_spearman_abs",
        "consistency_onset": [{"column": "cons_dense_gradcam_spearman_abs", "method": "gradcam",
                               "relation": "neither falls"}],
    }  # fmt: skip
    line = headline(findings)
    assert line == (
        "toy: dense 90.00%; tickets match at every round (to 20% weights); "
        "neither accuracy nor Grad-CAM consistency falls after round 1"
    )


def test_saved_figures_are_byte_identical_across_runs(tmp_path: Path) -> None:
    """DVC pins figures by hash: the same plot must give the same bytes (no dates, fixed SVG ids)."""
    digests = []
    for run in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], label="x")
        ax.legend()
        figures.save_figure(fig, tmp_path / run, "figure")
        plt.close(fig)
        digests.append([(tmp_path / run / f"figure.{ext}").read_bytes() for ext in ("png", "svg")])
    assert digests[0] == digests[1]
