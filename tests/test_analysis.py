"""Findings logic on constructed tables with known answers, and summarize_dataset on a synthetic tree.

`make_results_tree` writes fake per-ticket targets exactly in the formats of docs/architecture.md; the
report tests import it too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from ticketlens.data.prepared import PreparedData, save_prepared
from ticketlens.findings import accuracy_match, correlate, paired_gap, relation
from ticketlens.study import BRANCHES, DATASET_OUTPUTS, Ticket, branch_rounds, concept_slug
from ticketlens.summary import summarize_dataset, t_interval

LAYERS = ["features.3", "features.6"]
CLASSES = [0, 1, 2]
CONCEPTS = ["stripes", "has_wing_color::blue"]
METHODS = ["gradcam", "saliency"]
N_PROBE, SIZE, N_RANDOM = 6, 8, 5


def ticket_accuracy(seed: int, branch: str, r: int) -> float:
    """Known answer: tickets hold dense accuracy to round 3 and drop at round 4; controls decay early."""
    noise = 0.002 * (seed - 1)
    if branch == "ticket":
        return 0.95 + noise - (0.10 if r >= 4 else 0.0) - (0.05 if r >= 5 else 0.0)
    return 0.93 - 0.04 * r + 2 * noise


def ticket_consistency(seed: int, branch: str, r: int) -> float:
    """Known answer: Grad-CAM/saliency agreement with dense holds to round 2 and falls from round 3."""
    level = {0: 1.0, 1: 0.8, 2: 0.8, 3: 0.6, 4: 0.45, 5: 0.3}[r]
    if branch != "ticket":
        level -= 0.2
    return level + 0.005 * seed


def tcav_score(concept: str, layer: str, target: int, branch: str, r: int) -> float:
    """Known answer: 'stripes' is important for class 0 in the dense net and loses it from round 3."""
    if concept == "stripes" and target == 0 and (branch == "ticket" and r < 3):
        return 0.9
    return 0.5


def write_ticket(folder: Path, seed: int, branch: str, r: int, concepts: list[str]) -> None:
    rng = np.random.default_rng(1000 * seed + 10 * r + len(branch))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tcav").mkdir(exist_ok=True)
    remaining = 0.6**r
    metrics = {
        "dataset": "toy",
        "seed": seed,
        "branch": branch,
        "round": r,
        "test_accuracy": ticket_accuracy(seed, branch, r),
        "test_loss": 0.2 + 0.1 * r,
        "val_curve": [{"iteration": 50, "val_loss": 0.3, "val_accuracy": 0.9}],
        "early_stop_iteration": 400 - 50 * r,
        "early_stop_val_accuracy": 0.9,
        "remaining_fraction": remaining,
        "remaining_per_layer": {"features.0.weight": remaining},
        "iterations": 500,
        "train_seconds": 1.0,
        "images_per_second": 1000.0,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    labels = np.array([0, 0, 1, 1, 2, 2])
    rows = []
    for probe in range(N_PROBE):
        for method in METHODS:
            rows.append(
                {
                    "probe": 20 + probe,
                    "label": labels[probe],
                    "pred": labels[probe],
                    "correct": True,
                    "method": method,
                    "box_mass": 0.6,
                    "box_hit": 1.0,
                    "part_mass": 0.4 - 0.02 * r,
                    "part_hit": 1.0,
                    "deletion_auc": 0.2 + 0.01 * r,
                    "insertion_auc": 0.7 - 0.02 * r,
                }
            )
    pd.DataFrame(rows).to_csv(folder / "saliency.csv", index=False)
    cons = []
    references = ["random"] if r == 0 else ["dense", "previous", "random"]
    for probe in range(N_PROBE):
        for method in METHODS:
            for reference in references:
                base = 0.05 if reference == "random" else ticket_consistency(seed, branch, r)
                value = base + rng.normal(0, 0.01)
                cons.append(
                    {
                        "probe": 20 + probe,
                        "method": method,
                        "reference": reference,
                        "spearman_abs": value,
                        "spearman_signed": value - 0.1,
                        "iou_top10": value / 2,
                        "iou_top20": value / 1.5,
                        "ssim": value * 0.9,
                    }
                )
    pd.DataFrame(cons).to_csv(folder / "consistency.csv", index=False)
    maps = rng.random((N_PROBE, SIZE, SIZE)).astype(np.float32)
    np.savez(
        folder / "saliency.npz",
        gradcam=maps - 0.3,
        saliency=maps * 1e-3,
        probe=np.arange(20, 20 + N_PROBE, dtype=np.int64),
        labels=labels.astype(np.int64),
        preds=labels.astype(np.int64),
        logits=rng.random((N_PROBE, 3)).astype(np.float32),
    )
    null = [
        {
            "concept": f"random_{i}",
            "layer": layer,
            "target_class": target,
            "random_set": f"random_{(i + 1) % N_RANDOM}",
            "score": 0.5 + rng.normal(0, 0.03),
            "cav_accuracy": 0.5 + rng.normal(0, 0.02),
        }
        for layer in LAYERS
        for target in CLASSES
        for i in range(N_RANDOM)
    ]
    pd.DataFrame(null).to_csv(folder / "tcav" / "random.csv", index=False)
    for concept in concepts:
        rows = [
            {
                "concept": concept,
                "layer": layer,
                "target_class": target,
                "random_set": f"random_{i}",
                "score": tcav_score(concept, layer, target, branch, r) + rng.normal(0, 0.03),
                "cav_accuracy": 0.85,
            }
            for layer in LAYERS
            for target in CLASSES
            for i in range(N_RANDOM)
        ]
        pd.DataFrame(rows).to_csv(folder / "tcav" / f"{concept_slug(concept)}.csv", index=False)


def write_prepared(results: Path) -> None:
    n = 30
    generator = torch.Generator().manual_seed(0)
    data = PreparedData(
        name="toy",
        images=torch.randint(0, 256, (n, 1, SIZE, SIZE), dtype=torch.uint8, generator=generator),
        labels=torch.arange(n, dtype=torch.int64) % 3,
        split=torch.tensor([0] * 15 + [1] * 5 + [2] * 10, dtype=torch.int8),
        class_names=["alpha", "beta", "gamma"],
        mean=[0.5],
        std=[0.25],
    )
    save_prepared(data, results / "prepared" / "data.pt")


@dataclass(frozen=True)
class ToyStudy:
    """A synthetic results/toy tree: its folder, its ticket folders (seed, branch, round order) and concepts."""

    results: Path
    tickets: list[Path]
    concepts: list[str]

    def output(self, name: str) -> Path:
        """A per-dataset output (`study.DATASET_OUTPUTS`) under this tree's results folder."""
        return self.results / DATASET_OUTPUTS[name]

    def summarize(self, alpha: float = 0.05) -> dict[str, Any]:
        return summarize_dataset(
            "toy",
            self.tickets,
            self.concepts,
            alpha,
            summary=self.output("summary"),
            aggregate=self.output("summary_agg"),
            tcav_summary=self.output("tcav_summary"),
            findings=self.output("findings"),
            metrics=self.output("metrics"),
        )


def make_results_tree(
    root: Path, seeds: list[int], rounds: int = 5, concepts: list[str] | None = None
) -> ToyStudy:
    """results/toy with every ticket folder of the study (every branch), in the contract's formats."""
    concepts = CONCEPTS if concepts is None else concepts
    tickets = []
    for seed in seeds:
        for branch in BRANCHES:
            for r in branch_rounds(branch, rounds):
                folder = root / Ticket("toy", seed, branch, r).folder
                write_ticket(folder, seed, branch, r, concepts)
                tickets.append(folder)
    results = root / "results" / "toy"
    write_prepared(results)
    return ToyStudy(results, tickets, list(concepts))


# ------------------------------------------------------------------------------ constructed tables


def accuracy_table(drop_round: int, seeds: int = 3, rounds: int = 6) -> pd.DataFrame:
    rows = []
    for seed in range(seeds):
        for r in range(rounds + 1):
            acc = 0.95 + 0.001 * seed - (0.08 if r >= drop_round else 0.0)
            rows.append(
                {
                    "seed": seed,
                    "branch": "ticket",
                    "round": r,
                    "remaining_fraction": 0.8**r,
                    "test_accuracy": acc,
                }
            )
    return pd.DataFrame(rows)


def test_accuracy_drop_at_round_4_gives_last_matching_3_first_failing_4() -> None:
    match = accuracy_match(accuracy_table(drop_round=4))
    assert match["last_matching_round"] == 3
    assert match["first_failing_round"] == 4
    assert match["last_matching_remaining"] == pytest.approx(0.8**3)
    assert match["n_seeds"] == 3 and "t-interval" in match["criterion"]


def test_accuracy_that_never_drops_matches_at_every_round() -> None:
    match = accuracy_match(accuracy_table(drop_round=99))
    assert match["first_failing_round"] is None
    assert match["last_matching_round"] == 6


def test_tickets_better_than_dense_still_match() -> None:
    table = accuracy_table(drop_round=99)
    table.loc[table["round"] == 2, "test_accuracy"] += 0.02
    assert accuracy_match(table)["first_failing_round"] is None


def test_one_seed_uses_tolerance_and_says_so() -> None:
    match = accuracy_match(accuracy_table(drop_round=4, seeds=1))
    assert match["first_failing_round"] == 4
    assert match["dense_ci_low"] is not None and math.isnan(match["dense_ci_low"])
    assert "no interval" in match["criterion"]
    mean, low, high, n = t_interval([0.9])
    assert (mean, n) == (0.9, 1) and math.isnan(low) and math.isnan(high)


def test_two_seeds_use_the_worse_dense_seed_not_a_vacuous_t_interval() -> None:
    table = accuracy_table(drop_round=99, seeds=2)
    # seeds 0.950 and 0.951 at dense; a 0.5-point drop at round 3 sits inside the t-interval
    # (mean +- 12.7 * 0.0007) but below the worse seed, so it must count as failing
    table.loc[table["round"] == 3, "test_accuracy"] -= 0.005
    match = accuracy_match(table)
    assert match["first_failing_round"] == 3 and match["last_matching_round"] == 2
    assert match["threshold"] == pytest.approx(0.95)
    assert match["dense_ci_low"] < 0.945  # the interval itself would have called it a match
    assert "two seeds" in match["criterion"]


def test_t_interval_matches_scipy() -> None:
    from scipy import stats

    values = [0.90, 0.92, 0.95, 0.91]
    mean, low, high, n = t_interval(values)
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert n == 4 and (low, high) == pytest.approx(expected)


def test_correlation_that_must_be_significant() -> None:
    x = pd.Series(np.linspace(-0.2, 0.0, 15))
    y = pd.Series(0.3 + 2 * x + 0.01 * np.sin(np.arange(15)))
    result = correlate(x, y)
    assert result["n"] == 15 and result["significant"]
    assert result["spearman_rho"] > 0.9 and result["spearman_p"] < 1e-4 and result["pearson_p"] < 1e-4


def test_correlation_that_must_not_be_significant() -> None:
    # A symmetric V shape: y depends on x, but neither monotonically nor linearly.
    x = pd.Series(np.linspace(-1, 1, 15))
    y = pd.Series(np.abs(np.linspace(-1, 1, 15)))
    result = correlate(x, y)
    assert not result["significant"]
    assert abs(result["spearman_rho"]) < 0.1 and result["spearman_p"] > 0.5


def test_correlation_undefined_for_tiny_or_constant_input() -> None:
    assert math.isnan(correlate(pd.Series([1.0, 2.0]), pd.Series([2.0, 3.0]))["spearman_rho"])
    assert math.isnan(correlate(pd.Series([1.0, 2.0, 3.0]), pd.Series([1.0, 1.0, 1.0]))["spearman_p"])


@pytest.mark.parametrize(
    ("consistency", "accuracy", "expected"),
    [
        (2, 4, "before"),
        (4, 4, "with"),
        (5, 4, "after"),
        (3, None, "before"),
        (None, 4, "after"),
        (None, None, "neither falls"),
    ],
)
def test_relation(consistency: int | None, accuracy: int | None, expected: str) -> None:
    assert relation(consistency, accuracy) == expected


def test_paired_gap_detects_control_deficit_and_handles_one_seed() -> None:
    control = pd.Series([0.80, 0.82, 0.79], index=[0, 1, 2])
    ticket = pd.Series([0.95, 0.96, 0.955], index=[0, 1, 2])
    gap = paired_gap(control, ticket)
    assert gap["mean_gap"] == pytest.approx(-0.1517, abs=1e-3) and gap["p"] < 0.01 and gap["n"] == 3
    single = paired_gap(control.iloc[:1], ticket.iloc[:1])
    assert single["n"] == 1 and math.isnan(single["p"]) and "fewer than 2 seeds" in single["test"]


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
        "cons_random_saliency_spearman_abs",
        "loc_gradcam_part_mass",
        "faith_saliency_deletion_auc",
        "tcav_rank_corr_dense",
        "tcav_jaccard_dense",
        "tcav_n_significant",
    ):
        assert column in summary, column
    # stripes x class 0 x both layers: scores change significantly from round 3 on (Welch test per concept)
    changed = summary[(summary["branch"] == "ticket")].groupby("round")["tcav_n_changed"].mean()
    assert changed[0] == 0 and changed[1] == 0 and changed[3] >= 2
    dense = summary[(summary["branch"] == "ticket") & (summary["round"] == 0)]
    assert (dense["cons_dense_gradcam_spearman_abs"] == 1.0).all()
    assert (dense["tcav_jaccard_dense"] == 1.0).all()
    agg = pd.read_csv(results / "summary_agg.csv")
    assert len(agg) == 6 + 5 + 5 and (agg["n_seeds"] == 3).all()
    assert {"test_accuracy_mean", "test_accuracy_ci_low", "test_accuracy_ci_high"} <= set(agg.columns)
    tcav = pd.read_csv(results / "tcav_summary.csv")
    assert {"seed", "branch", "round", "concept", "layer", "target_class", "mean", "significant"} <= set(
        tcav.columns
    )
    assert len(tcav) == 48 * len(CONCEPTS) * len(LAYERS) * len(CLASSES)


def test_findings_on_synthetic_tree(summarized: tuple[Path, dict[str, Any]]) -> None:
    results, findings = summarized
    match = findings["accuracy_match"]
    assert (match["last_matching_round"], match["first_failing_round"]) == (3, 4)
    onsets = {o["column"]: o for o in findings["consistency_onset"]}
    head = onsets["cons_dense_gradcam_spearman_abs"]
    assert head["first_drop_round"] == 3 and head["relation"] == "before"
    corr = next(
        c
        for c in findings["correlations"]
        if c["column"] == "cons_dense_gradcam_spearman_abs" and c["scope"] == "ticket"
    )
    assert corr["n"] == 15 and corr["spearman_rho"] > 0.5 and corr["significant"]
    lost = [c for c in findings["concept_changes"] if c["branch"] == "ticket"]
    assert {(c["concept"], c["target_class"], c["change"], c["round"]) for c in lost} == {
        ("stripes", 0, "lost", 3)
    }
    # controls never have 'stripes' for class 0: they lose it at round 1, compared with the shared dense net
    assert {c["round"] for c in findings["concept_changes"] if c["branch"] == "reinit"} == {1}
    acc_gap = next(
        g
        for g in findings["control_gaps"]
        if g["control"] == "reinit" and g["round"] == 1 and g["metric"] == "test_accuracy"
    )
    assert acc_gap["mean_gap"] < 0 and acc_gap["n"] == 3 and acc_gap["test"].startswith("paired")


def test_metrics_json_is_numbers_only(summarized: tuple[Path, dict[str, Any]]) -> None:
    results, _ = summarized
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["last_matching_round"] == 3 and metrics["first_failing_round"] == 4
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()), metrics
    assert "corr_accuracy_consistency_rho" in metrics and "gap_reinit_accuracy_final" in metrics


def test_single_seed_study_summarizes(tmp_path: Path) -> None:
    study = make_results_tree(tmp_path, seeds=[0], rounds=3, concepts=[])
    findings = study.summarize()
    results = study.results
    assert findings["n_seeds"] == 1 and "one seed" in findings["interval"]
    assert all(g["p"] is None or math.isnan(g["p"]) for g in findings["control_gaps"])
    on_disk = json.loads((results / "findings.json").read_text())
    assert on_disk["control_gaps"][0]["p"] is None  # NaN written as null, file stays valid JSON
    assert findings["concept_changes"] == []


def test_missing_ticket_file_is_a_user_error(tmp_path: Path) -> None:
    from ticketlens.errors import UserError

    study = make_results_tree(tmp_path, seeds=[0], rounds=1, concepts=[])
    (study.results / "seed_0" / "reinit" / "round_1" / "consistency.csv").unlink()
    with pytest.raises(UserError, match="consistency.csv"):
        study.summarize()
