"""End to end: Snakemake on a tiny config in a temporary folder (MNIST from idx files + synthbirds)."""

from __future__ import annotations

import json

import pytest

from helpers import TINY, merged, snakemake, write_params

# `study` (conftest.py) is the tiny study run locally, shared with test_slurm.py: keep its users on one
# xdist worker (pytest runs with --dist loadgroup) so that it is computed once.
pytestmark = pytest.mark.xdist_group("tiny_study")


@pytest.mark.slow
def test_every_target_exists(study):
    for dataset in ("mnist", "synthbirds"):
        base = study / "results" / dataset
        for branch, r in (("ticket", 0), ("ticket", 1), ("reinit", 1), ("randmask", 1)):
            folder = base / "seed_0" / branch / f"round_{r}"
            for name in ("checkpoint.pt", "metrics.json", "saliency.npz", "saliency.csv", "consistency.csv",
                         "outcomes.csv", "tcav/calibration.csv"):  # fmt: skip
                assert (folder / name).stat().st_size > 0, folder / name
            # the per-image agreement with the dense net: the ticket branch only (the forgetting analysis)
            for name in ("images.npz", "agreement.csv"):
                assert (folder / name).exists() == (branch == "ticket"), folder / name
            concept = TINY["datasets"][dataset]["concepts"][0]  # no "::": its file stem is its name
            assert (folder / "tcav" / f"{concept}.csv").stat().st_size > 0, folder
        for name in ("summary.csv", "tcav_summary.csv", "findings.json", "report.md"):
            assert (base / name).stat().st_size > 0
        findings = json.loads((base / "findings.json").read_text())
        forgetting = findings["forgetting"]
        assert forgetting["explained_images"] > 0 and forgetting["per_round"][0]["round"] == 1
        assert len(forgetting["forgotten_vs_kept"]) == 1 and forgetting["predicts_next"] == []  # one round
        assert {"rows", "ranking"} <= set(findings["concept_loss"])
        report = (base / "report.md").read_text()
        assert "Which images tickets forget" in report and "figures/forgetting_gallery.png" in report
        assert (base / "figures" / "forgetting_gallery.png").stat().st_size > 0
    assert (study / "results" / "report.md").exists()
    assert (study / "results" / "metrics.json").exists()
    # one log per rule and job: logs/{dataset}/{rule}.log, per ticket logs/{dataset}/seed_s/{branch}/round_r/
    for dataset in ("mnist", "synthbirds"):
        for rule in ("prepare_dataset", "make_random_sets", "summarize_dataset", "build_dataset_report"):
            assert (study / "logs" / dataset / f"{rule}.log").exists(), (dataset, rule)
        for branch, r in (("ticket", 0), ("ticket", 1), ("reinit", 1), ("randmask", 1)):
            folder = study / "logs" / dataset / "seed_0" / branch / f"round_{r}"
            for rule in ("train_ticket", "explain_ticket", "tcav_calibration"):
                assert (folder / f"{rule}.log").stat().st_size > 0, folder / f"{rule}.log"
            assert (folder / "explain_images.log").exists() == (branch == "ticket"), folder
    assert (study / "logs" / "build_study_report.log").exists()


@pytest.mark.slow
def test_second_run_has_nothing_to_do(study):
    result = snakemake(study, "--cores", "2", "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_invalid_params_stop_before_any_job(tmp_path):
    write_params(tmp_path, merged(TINY, {"pruning": {"rate_fc": 1.5}}))
    result = snakemake(tmp_path, "--cores", "1")
    assert result.returncode != 0
    assert "pruning.rate_fc" in result.stderr and "(0, 1)" in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"- mnist\n", "params.yaml: not a mapping of params sections (got list)"),
        (b"hello\n", "params.yaml: not a mapping of params sections (got str)"),
        (b"42\n", "params.yaml: not a mapping of params sections (got int)"),
        (b"\x89PNG\r\n\x1a\n", "params.yaml: not a UTF-8 text file (a params file is YAML)"),
    ],
    ids=["list", "string", "int", "binary"],
)
def test_a_params_yaml_that_is_no_mapping_stops_with_one_line(tmp_path, content, expected):
    """Snakemake's own `configfile:` reader answers these with a WorkflowError or a traceback (issue 22)."""
    (tmp_path / "params.yaml").write_bytes(content)
    result = snakemake(tmp_path, "--cores", "1", "-n")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Error in file" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"ticketlens: {expected}"
