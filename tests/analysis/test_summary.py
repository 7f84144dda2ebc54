"""Findings logic on constructed tables with known answers, and summarize_dataset on a synthetic tree.

`helpers.make_results_tree` writes fake per-ticket targets exactly in the formats of docs/architecture.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from helpers import CLASSES, CONCEPTS, LAYERS, METHODS, N_RANDOM, make_results_tree
from ticketlens.analysis import inference
from ticketlens.analysis.associations import paired_gap, within_seed_correlations
from ticketlens.analysis.findings import relation

# ------------------------------------------------------------------------------ constructed tables


def test_seed_mean_without_test_set_noise_is_the_t_interval_over_seeds() -> None:
    from scipy import stats

    values = [0.90, 0.92, 0.95, 0.91]
    est = inference.seed_mean(values, 0.95, (0.0, 1.0))
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert est.n == 4 and est.df == 3 and (est.ci_low, est.ci_high) == pytest.approx(expected)
    # plus the noise of 50 shared test images: a larger standard error with Satterthwaite's degrees of freedom
    noisy = inference.seed_mean(values, 0.95, (0.0, 1.0), np.eye(4, 50))
    image_variance = np.eye(4, 50).mean(axis=0).var(ddof=1) / 50
    assert noisy.se == pytest.approx(math.sqrt(est.se**2 + image_variance))
    assert noisy.df == pytest.approx(noisy.se**4 / (est.se**4 / 3 + image_variance**2 / 49))
    two = inference.seed_mean([0.5, 0.9], 0.95, (0.0, 1.0))
    assert two.estimate == pytest.approx(0.7) and math.isnan(two.ci_low) and not two.testable


def within_seed_table(consistency: list[list[float]], slopes: list[float] | None = None) -> pd.DataFrame:
    """Tickets of len(consistency) seeds, rounds 0-5: accuracy falls linearly (per-seed slope); consistency
    per seed and pruned round as given (1.0 at the dense net)."""
    slopes = slopes or [0.02] * len(consistency)
    rows = []
    for seed, values in enumerate(consistency):
        for r in range(6):
            rows.append({"seed": seed, "branch": "ticket", "round": r, "remaining_fraction": 0.8**r,
                         "test_accuracy": 0.95 - slopes[seed] * r,
                         "cons_dense_gradcam_spearman": 1.0 if r == 0 else values[r - 1]})  # fmt: skip
    return pd.DataFrame(rows)


FALLING = [0.9, 0.7, 0.65, 0.4, 0.2]


def test_within_seed_correlation_that_must_be_significant() -> None:
    falling = [[v + 0.01 * seed for v in FALLING] for seed in range(3)]
    falling[1][1], falling[1][2] = falling[1][2], falling[1][1]  # one seed not perfectly monotone
    (result,) = within_seed_correlations(within_seed_table(falling), 0.05)
    assert result["kind"] == "exploratory" and result["n_seeds"] == 3 and result["n_rounds"] == 5
    assert result["mean_rho"] > 0.9 and result["significant"] and result["ci_high"] <= 1.0


def test_a_correlation_between_seeds_only_is_not_a_within_seed_correlation() -> None:
    """Seed 2 loses accuracy fastest and has the lowest consistency overall, but within every seed the
    consistency only zigzags: pooling seeds x rounds as independent points gives Spearman rho 0.64 with
    p = 0.01; the within-seed test must not call that significant."""
    zigzag = [
        [0, 0.05, -0.05, 0.03, -0.02],
        [0.04, -0.03, 0.02, -0.05, 0.01],
        [-0.02, 0.04, 0.0, 0.05, -0.04],
    ]
    levels = [[level + z for z in zig] for level, zig in zip([0.9, 0.6, 0.3], zigzag, strict=True)]
    (result,) = within_seed_correlations(within_seed_table(levels, [0.01, 0.02, 0.03]), 0.05)
    assert not result["significant"] and result["p"] > 0.1 and result["ci_low"] >= -1.0


def test_within_seed_correlation_is_undefined_for_constant_input() -> None:
    (result,) = within_seed_correlations(within_seed_table([[0.5] * 5] * 3), 0.05)
    assert math.isnan(result["mean_rho"]) and result["n_seeds"] == 0 and not result["significant"]


@pytest.mark.parametrize(
    ("accuracy", "drift", "last_round", "expected"),
    [
        ((3, 4), (1, 2), 5, ("before", [-2, -2])),
        ((3, 4), (3, 4), 5, ("with", [0, 0])),
        ((3, 4), (4, 5), 5, ("after", [1, 1])),
        ((2, 4), (2, 3), 5, ("not determined", [-1, 0])),  # the onsets' intervals overlap
        ((5, None), (1, 2), 5, ("not determined", None)),  # accuracy never fails: no relation
        ((3, 4), (5, None), 5, ("not drifted in the rounds run", None)),  # every round shown not drifted
        ((3, 4), (4, None), 5, ("not determined", None)),  # round 5 undecided: absence of evidence only
        ((3, 4), (0, None), 5, ("not determined", None)),  # nothing decided at all
        ((3, 4), (1, None), 5, ("not determined", None)),  # a drifted round not confirmed to the end
    ],
)
def test_relation_only_when_both_onsets_are_determined(
    accuracy: tuple, drift: tuple, last_round: int, expected: tuple
) -> None:
    assert relation(accuracy, drift, last_round) == expected


def test_paired_gap_detects_control_deficit_and_handles_few_seeds() -> None:
    control = pd.Series([0.80, 0.82, 0.79], index=[0, 1, 2])
    ticket = pd.Series([0.95, 0.96, 0.955], index=[0, 1, 2])
    gap = paired_gap(control, ticket, (0.0, 1.0))
    assert gap["mean_gap"] == pytest.approx(-0.1517, abs=1e-3) and gap["p"] < 0.01 and gap["n"] == 3
    assert -1.0 <= gap["ci_low"] < gap["ci_high"] < 0
    for n in (1, 2):
        few = paired_gap(control.iloc[:n], ticket.iloc[:n], (0.0, 1.0))
        assert few["n"] == n and math.isnan(few["p"]) and "no test" in few["test"]


# ---------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def summarized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    study = make_results_tree(tmp_path_factory.mktemp("study"), seeds=[0, 1, 2])
    return study.results, study.summarize()


def test_summarize_writes_every_target(summarized: tuple[Path, dict[str, Any]]) -> None:
    results, _ = summarized
    for name in ("summary.csv", "summary_agg.csv", "tcav_summary.csv", "findings.json", "metrics.json"):
        assert (results / name).stat().st_size > 0, name
    assert not list(results.glob(".*.tmp")), "temporary files left behind"
    summary = pd.read_csv(results / "summary.csv")
    assert len(summary) == 3 * (6 + 5 + 5)
    for column in (
        "remaining_fraction",
        "test_accuracy",
        "early_stop_iteration",
        "cons_dense_gradcam_ssim",
        "cons_random_saliency_spearman",
        "loc_gradcam_part_mass",
        "faith_saliency_deletion_auc",
        "empty_gradcam",
        "n_probe",
        "tcav_rank_corr_dense",
        "tcav_jaccard_dense",
        "tcav_n_significant",
    ):
        assert column in summary, column
    empty = summary.set_index(["branch", "round", "seed"])["empty_gradcam"]
    assert empty[("ticket", 4, 0)] == 2 and empty[("ticket", 3, 0)] == 0 and empty[("reinit", 5, 1)] == 0
    # stripes x class 0 x both layers: significant in the dense net, not from round 3 on (decisions change)
    changed = summary[(summary["branch"] == "ticket")].groupby("round")["tcav_n_changed"].mean()
    assert changed[0] == 0 and changed[1] == 0 and changed[3] >= 2
    dense = summary[(summary["branch"] == "ticket") & (summary["round"] == 0)]
    assert (dense["cons_dense_gradcam_spearman"] == 1.0).all()
    assert (dense["tcav_jaccard_dense"] == 1.0).all()
    agg = pd.read_csv(results / "summary_agg.csv")
    assert len(agg) == 6 + 5 + 5 and (agg["n_seeds"] == 3).all()
    assert {"test_accuracy_mean", "test_accuracy_ci_low", "test_accuracy_ci_high"} <= set(agg.columns)
    assert (agg["test_accuracy_ci_high"] <= 1.0).all() and (
        agg["cons_dense_gradcam_spearman_ci_high"] <= 1
    ).all()
    tcav = pd.read_csv(results / "tcav_summary.csv")
    assert {"seed", "branch", "round", "concept", "layer", "target_class", "mean", "significant"} <= set(
        tcav.columns
    )
    assert len(tcav) == 48 * len(CONCEPTS) * len(LAYERS) * len(CLASSES)


def test_findings_on_synthetic_tree(summarized: tuple[Path, dict[str, Any]]) -> None:
    _, findings = summarized
    match = findings["accuracy_match"]
    assert (match["last_matching_round"], match["first_failing_round"]) == (3, 4)
    verdicts = [r["verdict"] for r in match["per_round"]]
    assert verdicts == ["matches"] * 3 + ["fails"] * 2 and match["test_set_noise"]
    assert 0 <= match["dense_ci_low"] <= match["dense_accuracy"] <= match["dense_ci_high"] <= 1
    drifts = {d["column"]: d for d in findings["drift"]}
    head = drifts["cons_dense_gradcam_spearman"]
    assert findings["headline_consistency"] == "cons_dense_gradcam_spearman"
    # the dense nets share DENSE_BASE: their seed-to-seed rank correlation is the ceiling, about 0.7
    assert 0.6 < head["ceiling"] < 0.8 and head["ceiling_ci_low"] < head["ceiling"] < head["ceiling_ci_high"]
    assert head["floor"] == pytest.approx(0.05, abs=0.02)
    assert (head["last_not_drifted_round"], head["first_drift_round"]) == (2, 3)
    assert head["relation"] == "before" and head["lag_rounds"] == [-1, -1]
    assert len(findings["ceiling_pairs"]) == 3 * len(METHODS)
    corr = next(c for c in findings["correlations"] if c["column"] == "cons_dense_gradcam_spearman")
    assert corr["n_seeds"] == 3 and corr["mean_rho"] > 0.5 and corr["kind"] == "exploratory"
    # 'stripes' pushes class 0 in the dense nets and its effect falls to 0 from round 3: lost from there
    loss = findings["concept_loss"]
    assert {(c["concept"], c["target_class"]) for c in loss["ranking"]} == {("stripes", 0)}
    assert {c["lost_from_round"] for c in loss["ranking"]} == {3}
    unchanged = [row for row in loss["rows"] if row["concept"] != "stripes" or row["target_class"] != 0]
    assert unchanged and all(row["status"] != "lost" for row in unchanged)
    assert sum(row["status"] == "kept" for row in unchanged) >= len(unchanged) / 2
    acc_gap = next(
        g
        for g in findings["control_gaps"]
        if g["control"] == "reinit" and g["round"] == 1 and g["metric"] == "test_accuracy"
    )
    assert acc_gap["mean_gap"] < 0 and acc_gap["n"] == 3 and acc_gap["test"].startswith("paired")
    assert acc_gap["p_holm"] >= acc_gap["p"] and acc_gap["ci_low"] >= -1.0
    assert findings["empty_maps"]["gradcam"][4] == {"branch": "ticket", "round": 4, "empty": 6, "maps": 18}


def test_metrics_json_is_numbers_only(summarized: tuple[Path, dict[str, Any]]) -> None:
    results, _ = summarized
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["last_matching_round"] == 3 and metrics["first_failing_round"] == 4
    assert metrics["first_drift_round"] == 3 and metrics["empty_gradcam_maps"] == 12
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()), metrics
    assert "corr_accuracy_consistency_within_seed_rho" in metrics and "gap_reinit_accuracy_final" in metrics


def test_two_seed_study_states_numbers_and_makes_no_test(tmp_path: Path) -> None:
    study = make_results_tree(tmp_path, seeds=[0, 1], rounds=5, concepts=[])
    findings = study.summarize()
    assert not findings["tested"] and "numbers only" in findings["interval"]
    match = findings["accuracy_match"]
    assert match["first_failing_round"] is None and match["last_matching_round"] == 0
    assert all(r["verdict"] == "not determined" for r in match["per_round"])
    assert all(d["first_drift_round"] is None for d in findings["drift"])
    assert all(math.isnan(g["p"]) for g in findings["control_gaps"])
    agg = pd.read_csv(study.output("summary_agg"))
    assert agg["test_accuracy_ci_low"].isna().all()  # no vacuous two-seed interval (once 69.93% to 112.29%)


def test_single_seed_study_summarizes(tmp_path: Path) -> None:
    study = make_results_tree(tmp_path, seeds=[0], rounds=3, concepts=[])
    findings = study.summarize()
    results = study.results
    assert findings["n_seeds"] == 1 and "numbers only" in findings["interval"]
    assert all(g["p"] is None or math.isnan(g["p"]) for g in findings["control_gaps"])
    on_disk = json.loads((results / "findings.json").read_text())
    assert on_disk["control_gaps"][0]["p"] is None  # NaN written as null, file stays valid JSON
    assert findings["concept_loss"]["rows"] == [] and findings["ceiling_pairs"] == []


def test_missing_ticket_file_is_a_user_error(tmp_path: Path) -> None:
    from ticketlens.errors import UserError

    study = make_results_tree(tmp_path, seeds=[0], rounds=1, concepts=[])
    (study.results / "seed_0" / "reinit" / "round_1" / "consistency.csv").unlink()
    with pytest.raises(UserError, match="consistency.csv"):
        study.summarize()


def test_tcav_calibration_in_findings_metrics_and_report(summarized: tuple[Path, dict[str, Any]]) -> None:
    """Every ticket's calibration sets (tcav/calibration.csv) pooled per dataset; all were null-like here."""
    results, findings = summarized
    calibration = findings["tcav_calibration"]
    assert (
        calibration["rows"] == 48 * N_RANDOM * len(LAYERS) * len(CLASSES)
        and calibration["sets"] == 48 * N_RANDOM
    )
    assert calibration["rate_uncorrected"] == calibration["rate_holm"] == 0.0
    metrics = json.loads((results / "metrics.json").read_text())
    assert (
        metrics["tcav_calibration_rows"] == calibration["rows"]
        and metrics["tcav_calibration_rate_holm"] == 0.0
    )
    dense = findings["concepts_dense_significant"]
    assert {(d["concept"], d["target_class"], d["direction"]) for d in dense} == {("stripes", 0, "up")}
    lost = findings["concept_loss"]["ranking"]
    assert lost and all(c["lost_from_round"] == 3 and c["difference"] < 0 for c in lost)


def test_dense_nets_explaining_different_probe_images_are_refused(tmp_path: Path) -> None:
    from ticketlens.errors import UserError

    study = make_results_tree(tmp_path, seeds=[0, 1], rounds=1, concepts=[])
    path = study.results / "seed_1" / "ticket" / "round_0" / "saliency.npz"
    arrays = dict(np.load(path))
    np.savez(path, **{**arrays, "probe": arrays["probe"] + 1})
    # its own tables now disagree with it (issue 22: tables are read with the rows the ticket has)
    with pytest.raises(UserError, match="different probe images|has rows of another ticket or run"):
        study.summarize()
