"""`ticketlens verify`: a finished study against the small results pinned in git."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ticketlens.cli import run
from ticketlens.study import tracked_results

SUMMARY = "Report: results/report.md\nmnist: dense 97.10%; tickets match to 3.48% weights (round 3)\n"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def pinned(tmp_path: Path, monkeypatch) -> Path:
    """A repository whose HEAD pins a one-dataset study's small results; the working tree holds them too."""
    repo = tmp_path / "repo"
    for name in tracked_results(["mnist"]):
        path = repo / "results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{name}\n")
    (repo / "results" / "metrics.json").write_text(
        json.dumps({"mnist": {"dense_accuracy": 0.971, "ticket_final_accuracy": 0.95, "n_seeds": 4}})
    )
    (repo / "results" / "summary.txt").write_text(SUMMARY)
    (repo / "results" / "mnist" / "report.md").write_text("# mnist\n\nTickets match to round 3.\n| a |\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "pin")
    monkeypatch.chdir(repo)
    return repo


def test_an_unchanged_study_is_byte_identical(pinned: Path, capsys) -> None:
    assert run(["verify"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("byte-identical: all 9 tracked result files")
    assert out[1:] == ["metrics: every value of results/metrics.json equals the pinned one",
                       "findings: all 2 sentences agree"]  # fmt: skip


def test_a_changed_study_names_files_metrics_and_sentences(pinned: Path, capsys) -> None:
    metrics = pinned / "results" / "metrics.json"
    metrics.write_text(
        json.dumps({"mnist": {"dense_accuracy": 0.961, "ticket_final_accuracy": 0.951, "n_seeds": 4}})
    )
    (pinned / "results" / "summary.txt").write_text(SUMMARY.replace("97.10%", "96.10%"))
    (pinned / "results" / "mnist" / "findings.json").unlink()
    assert run(["verify"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("not byte-identical: 3 of 9 tracked result files differ")
    assert "mnist/findings.json (missing)" in out[0] and "summary.txt" in out[0]
    # largest first
    assert out[1] == ("largest metric differences (results/metrics.json): mnist.dense_accuracy 0.971 -> 0.961; "
                      "mnist.ticket_final_accuracy 0.95 -> 0.951")  # fmt: skip
    assert out[2] == "findings: 1 of 2 sentences differ; first:"
    assert "97.10%" in out[3] and "96.10%" in out[4]


def test_a_revision_without_pinned_results_is_one_line(pinned: Path, capsys) -> None:
    _git(pinned, "rm", "-q", "-r", "--cached", "results")
    _git(pinned, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "unpin")
    assert run(["verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ticketlens verify: error: pinned results: git revision 'HEAD' tracks no results/metrics.json "
                   "(allowed: a revision whose commit holds the pinned study's small results)"]  # fmt: skip
    assert run(["verify", "--pinned", "nosuchrev"]) == 2
    assert "revision 'nosuchrev'" in capsys.readouterr().err
