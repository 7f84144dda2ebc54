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

from helpers import CLASSES, CONCEPTS, ToyStudy, make_results_tree
from ticketlens.analysis import power
from ticketlens.cli import run
from ticketlens.errors import UserError
from ticketlens.report import build_dataset_report, figures, grids, load_gallery_inputs
from ticketlens.report import readme as readme_module
from ticketlens.report.headline import headline
from ticketlens.report.sentences import accuracy_sentences, drift_sentences
from ticketlens.study import SIMILARITY_METRICS

FIGURES = [
    "accuracy_vs_remaining",
    "consistency_gradcam",
    "consistency_saliency",
    "gallery",
    "tcav",
    "scatter_accuracy_consistency",
    "forgetting_gallery",
]


def report_args(study: ToyStudy) -> list[str]:
    """`ticketlens build-dataset-report` of a synthetic tree, with the files its rule declares."""
    return [
        "build-dataset-report", "--dataset", "toy",
        "--summary", str(study.output("summary")), "--tcav-summary", str(study.output("tcav_summary")),
        "--findings", str(study.output("findings")), "--data", str(study.results / "prepared" / "data.pt"),
        "--saliency", *[str(t / "saliency.npz") for t in study.tickets],
        "--image-maps", *[str(t / "images.npz") for t in study.tickets if "/ticket/" in str(t)],
        "--report", str(study.output("report")), "--figures", str(study.output("figures")),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    study = make_results_tree(tmp_path_factory.mktemp("report"), seeds=[0, 1, 2])
    results = study.results
    # Through the console script, as the workflow calls it, so the CLI contract is covered too.
    assert run(study.summarize_args()) == 0
    assert run(report_args(study)) == 0
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


def test_consistency_figure_has_a_panel_per_metric_the_ceiling_and_the_floor(built: dict[str, Any]) -> None:
    fig = figures.plot_consistency(built["summary"], "gradcam", built["findings"])
    assert len(fig.axes) == len(SIMILARITY_METRICS)
    assert _axes_with_data(fig) == fig.axes, "empty panel"
    levels = {d["metric"]: d for d in built["findings"]["drift"] if d["method"] == "gradcam"}
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() and ax.get_xscale() == "log"
        flat = {
            line.get_linestyle(): line.get_ydata()[0] for line in ax.lines if len(set(line.get_ydata())) == 1
        }
        metric = next(m for m, name in SIMILARITY_METRICS.items() if name == ax.get_title())
        assert flat["--"] == pytest.approx(levels[metric]["floor"]) and flat["--"] < 0.1
        assert flat["-."] == pytest.approx(levels[metric]["ceiling"])
    spearman = next(ax for ax in fig.axes if ax.get_title() == SIMILARITY_METRICS["spearman"])
    assert 0.6 < [line for line in spearman.lines if line.get_linestyle() == "-."][0].get_ydata()[0] < 0.8
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("floor" in t for t in labels) and any("ceiling" in t for t in labels)
    assert any("ticket" in t for t in labels)


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
        assert any("within-seed" in t.get_text() and "3 seeds" in t.get_text() for t in ax.texts)


def test_report_markdown_states_computed_findings(built: dict[str, Any]) -> None:
    results = built["results"]
    text = (results / "report.md").read_text()
    assert "The dense network reaches 95.00% test accuracy (95% interval" in text
    assert "at every round up to round 3 (21.6% of weights remaining)" in text
    assert "From round 4 (13% of weights remaining) on, tickets fail: accuracy is 9.93 points below" in text
    assert "margin of 1 point" in text and "test-set noise" in text
    assert "the ceiling, a dense net compared with the dense nets of the other seeds, is 0.687" in text
    assert (
        "Tickets have drifted from round 3 (21.6% of weights remaining) on" in text
        and "below the ceiling" in text
    )
    assert (
        "Explanations drift before accuracy fails (drift onset minus accuracy onset: -1 to -1 rounds)" in text
    )
    assert "Grad-CAM maps with no positive cell (emptied by Grad-CAM's ReLU): 12 of 288" in text
    assert "Exploratory: within each seed" in text and "Holm-adjusted" in text  # 5 rounds: tested
    assert (
        "Lost 1: concept stripes for class 0 (layer features.3) from round 3 (21.6% of weights remaining)"
        in text
    )
    assert "tickets lose 2, keep" in text  # stripes for class 0 on both layers; the other rows do not move
    # forgetting: from round 4 tickets fail on the hardest tenth of the images (the toy's known answer)
    assert "At round 4 (13% of weights remaining) a ticket forgets 10.5% of the test images" in text
    assert (
        "pruning-identified exemplars" in text and "Round 4: kept images agree with the dense net's" in text
    )
    assert "after adjusting for the dense net's margin" in text and "### Forgetting per class" in text
    assert "concept stripes pushes class 0 up (layer features.3)" in text  # the direction of the effect
    assert "Holm per ticket over concepts x layers x classes at alpha 0.05" in text
    assert "were rejected in 0% of rows before correction" in text and "0% after Holm" in text
    assert "random re-init control's accuracy is 6.97 points below the ticket's" in text
    assert "paired t-test over seeds" in text
    for name in FIGURES:
        assert f"figures/{name}.png" in text
    assert "n/a [" not in text and "| empty Grad-CAM maps |" in text


def test_readme_block_is_rewritten_from_results_and_an_edited_number_fails(
    built: dict[str, Any], tmp_path: Path
) -> None:
    results = built["results"]
    findings = json.loads((results / "findings.json").read_text())
    pinned = tmp_path / "results"
    (pinned / "toy").mkdir(parents=True)
    (pinned / "toy" / "findings.json").write_text(json.dumps(findings))
    (pinned / "summary.txt").write_text(f"Report: results/report.md\n{headline(findings)}\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# toy\n\n{readme_module.START}\nold text\n{readme_module.END}\n\nMore.\n")
    assert run(["readme-findings", "--readme", str(readme), "--results", str(pinned)]) == 0
    text = readme.read_text()
    assert "old text" not in text and headline(findings) in text and text.endswith("\n\nMore.\n")
    assert "**toy** (3 seeds, rounds 0-5" in text and "95% interval" in text
    # why tickets fail: both drift-first tests at their last testable round and the concepts lost first
    assert "Why tickets fail: forgotten images agree less (round 5): " in text
    assert "low agreement predicts next-round forgetting (round 4): " in text
    assert "concepts lost: 2 of 12 rows, first stripes/class 0 (round 3)" in text
    assert run(["readme-findings", "--readme", str(readme), "--results", str(pinned), "--check"]) == 0
    dense = f"dense {100 * findings['accuracy_match']['dense_accuracy']:.2f}%"
    assert dense in text
    readme.write_text(text.replace(dense, "dense 97.92%"))  # an edited number
    assert run(["readme-findings", "--readme", str(readme), "--results", str(pinned), "--check"]) == 2
    with pytest.raises(UserError, match="findings block differs"):
        readme_module.readme_findings(readme, pinned, check=True)


def test_sentences_follow_the_numbers() -> None:
    rows = [
        {"round": 1, "remaining": 0.5, "difference": 0.001, "ci_low": -0.004, "ci_high": 0.006, "verdict": "matches"},
        {"round": 2, "remaining": 0.25, "difference": -0.01, "ci_low": -0.03, "ci_high": 0.01,
         "verdict": "not determined"},
    ]  # fmt: skip
    findings = {
        "alpha": 0.05,
        "n_seeds": 3,
        "tested": True,
        "accuracy_match": {
            "dense_accuracy": 0.9,
            "dense_ci_low": 0.88,
            "dense_ci_high": 0.92,
            "test_set_noise": True,
            "margin": 0.01,
            "last_matching_round": 1,
            "last_matching_remaining": 0.5,
            "first_failing_round": None,
            "first_failing_remaining": None,
            "per_round": rows,
            "test": "non-inferiority",
        },
    }
    sentences = accuracy_sentences(findings)
    assert "95% interval 88.00% to 92.00% over 3 seeds, test-set noise included" in sentences[0]
    assert "up to round 1 (50% of weights remaining); there the difference is +0.10 points" in sentences[1]
    assert "(90% interval -0.40 to +0.60 points)" in sentences[1]
    assert sentences[2].startswith("Whether tickets match is not determined at round 2")
    assert not any("fail" in s for s in sentences[:3])
    two = accuracy_sentences({**findings, "n_seeds": 2, "tested": False})
    assert "no interval" in two[0] and "round 2 -1.00" in two[1] and "no test" in two[1]


def test_study_report_merges_metrics_and_prints_summary(
    built: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = built["results"]
    args = ["build-study-report", "--findings", str(results / "findings.json"),
            "--metrics", str(results / "metrics.json"), "--reports", str(results / "report.md"),
            "--report", str(tmp_path / "report.md"), "--metrics-out", str(tmp_path / "metrics.json"),
            "--summary-out", str(tmp_path / "summary.txt")]  # fmt: skip
    assert run(args) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].startswith("Report: ") and str(tmp_path / "report.md") in printed[0]
    assert printed[1] == (
        "toy: dense 95.00%; tickets match to 21.6% weights (round 3), fail from round 4 on; "
        "Grad-CAM consistency drifts before accuracy fails"
    )
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
    assert "mean of 1 seed(s); numbers only, no interval" in text and "no test: 1 seed(s)" in text
    assert "numbers only, no test" in text and "Tickets have drifted" not in text
    assert (results / "figures" / "accuracy_vs_remaining.png").stat().st_size > 0
    assert not (results / "figures" / "tcav.png").exists()  # no concepts configured: no heatmap


def test_missing_summary_is_a_user_error(tmp_path: Path) -> None:
    study = ToyStudy(tmp_path / "results" / "toy", [tmp_path / "results/toy/seed_0/ticket/round_0"], [])
    assert run(report_args(study)) == 2


def _headline_findings(drift_rounds: list[dict[str, Any]], relation: str, last_not_drifted: int) -> dict:
    return {
        "dataset": "toy",
        "tested": True,
        "rounds": 3,
        "accuracy_match": {"dense_accuracy": 0.9, "first_failing_round": None, "last_matching_remaining": 0.2,
                           "last_matching_round": 3, "per_round": []},
        "headline_consistency": "cons_dense_gradcam_spearman",
        "drift": [{"column": "cons_dense_gradcam_spearman", "method": "gradcam", "metric": "spearman",
                   "ceiling": 0.6, "floor": 0.2, "first_drift_round": None,
                   "last_not_drifted_round": last_not_drifted, "relation": relation, "per_round": drift_rounds}],
    }  # fmt: skip


def test_headline_says_not_drifted_only_when_every_round_is_shown_not_drifted() -> None:
    shown = [{"round": r, "verdict": "not drifted"} for r in (1, 2, 3)]
    line = headline(_headline_findings(shown, "not drifted in the rounds run", 3))
    assert line == (
        "toy: dense 90.00%; tickets match to 20% weights (round 3); Grad-CAM consistency: not drifted in the rounds run"
    )
    untested = headline({**_headline_findings(shown, "", 3), "tested": False, "n_seeds": 2})
    assert untested == "toy: dense 90.00%; 2 seed(s): numbers only, no test"


def test_a_not_determined_round_is_never_read_as_no_drift_and_carries_its_mde() -> None:
    """MNIST round 3 of the default study: -0.084, standard error 0.055 on 3 degrees of freedom."""
    fields = power.power_fields(-0.084, 0.055, 3.0, 4, 0.0, -1, 0.05)
    rounds = [{"round": 1, "verdict": "not drifted"}, {"round": 2, "verdict": "not drifted"},
              {"round": 3, "verdict": "not determined", "difference": -0.084, "drift_power": fields}]  # fmt: skip
    line = headline(_headline_findings(rounds, "not determined", 2))
    assert "no drift" not in line and "not drifted in the rounds run" not in line
    assert line.endswith(
        "Grad-CAM consistency: not drifted to round 2, drift not determined at round 3 (could detect a drop of "
        "0.18 or more)"
    )
    (sentence,) = [s for s in drift_sentences({**_headline_findings(rounds, "not determined", 2), "alpha": 0.05,
                   "consistency_margin": 0.0})[1:] if "not determined" in s]  # fmt: skip
    assert "could detect a drop of 0.18 or more below the ceiling (80% power)" in sentence
    assert "its power is 33% (13 seeds would give 80%)" in sentence and "not evidence" in sentence


def test_from_round_on_only_for_rounds_that_were_run() -> None:
    findings = _headline_findings([{"round": r, "verdict": "not drifted"} for r in (1, 2, 3)], "", 3)
    findings["accuracy_match"] |= {"first_failing_round": 3, "last_matching_round": 2}
    assert "fail at round 3, the last round run" in headline(findings)
    findings["accuracy_match"]["first_failing_round"] = 2
    assert "fail from round 2 on" in headline(findings)


def test_saved_figures_are_byte_identical_across_runs(tmp_path: Path) -> None:
    """DVC pins figures by hash: the same plot must give the same bytes (no dates, fixed SVG ids)."""
    digests = []
    for attempt in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], label="x")
        ax.legend()
        figures.save_figure(fig, tmp_path / attempt, "figure")
        plt.close(fig)
        digests.append([(tmp_path / attempt / f"figure.{ext}").read_bytes() for ext in ("png", "svg")])
    assert digests[0] == digests[1]
