"""End to end at CUB's shape: the README's CUB commands on a generated archive (tests/configs/cub_tiny.yaml:
200 classes, 312 attributes, 3 images a class, 32 px, 3 seeds, 2 rounds), prepare -> report."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import BIN, CUB_TINY, snakemake, write_params

pytestmark = pytest.mark.xdist_group("cub_study")
CUB_ROOT = Path(CUB_TINY["datasets"]["cub"]["root"])


def ticketlens(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ticketlens"), *args], cwd=workdir, capture_output=True, text=True)


@pytest.fixture(scope="module")
def cub_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("cub_study")
    write_params(workdir, CUB_TINY)
    made = ticketlens(workdir, "data", "make-cub-like", "--out", str(CUB_ROOT.parent), "--images-per-class", "3",
                      "--image-size", "32")  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


@pytest.mark.slow
def test_data_check_accepts_the_archive(cub_study: Path) -> None:
    checked = ticketlens(cub_study, "data", "check", "--root", str(CUB_ROOT), "--set-size", "5")
    assert checked.returncode == 0, checked.stderr
    assert "classes: 200" in checked.stdout and "attributes: 312" in checked.stdout
    assert "cbm112: Koh et al.'s procedure on this copy" in checked.stdout


@pytest.mark.slow
def test_every_stage_ran_at_200_classes(cub_study: Path) -> None:
    base = cub_study / "results" / "cub"
    concepts = CUB_TINY["datasets"]["cub"]["concepts"]
    for seed in (0, 1, 2):
        for r in (0, 1, 2):
            folder = base / f"seed_{seed}" / "ticket" / f"round_{r}"
            for name in (
                "checkpoint.pt",
                "metrics.json",
                "saliency.npz",
                "saliency.csv",
                "tcav/calibration.csv",
            ):
                assert (folder / name).stat().st_size > 0, folder / name
            for concept in concepts:
                table = folder / "tcav" / f"{concept.replace('::', '__')}.csv"
                assert table.stat().st_size > 0, table
    for name in ("summary.csv", "tcav_summary.csv", "findings.json", "report.md"):
        assert (base / name).stat().st_size > 0
    report = (base / "report.md").read_text()
    assert len(report.splitlines()) < 600  # the 10,800-row TCAV table is in tcav_summary.csv, not here
    assert (cub_study / "results" / "report.md").exists()
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(snakemake(cub_study, "--cores", "2", "-n"))
