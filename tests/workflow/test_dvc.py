"""dvc.yaml pins what the study writes: the small results in git (`cache: false`, so `dvc metrics diff`
and `ticketlens verify` work on a fresh clone), the rest cached, and nothing the study does not write."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from ticketlens.study import RESULTS, tracked_results

ROOT = Path(__file__).resolve().parents[2]


def _outs() -> dict[str, dict]:
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["study"]
    entries = [*stage["outs"], *stage["metrics"]]
    return {path: options for entry in entries for path, options in entry.items()}


def test_the_small_results_are_in_git_and_the_rest_is_cached() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["study"]
    outs = _outs()
    tracked = {f"{RESULTS}/{p}" for p in tracked_results(params["datasets"])}
    assert {p for p, o in outs.items() if o.get("cache") is False} == tracked
    cached = {p for p, o in outs.items() if o.get("cache", True)}
    expected = {
        f"{RESULTS}/{d}/{folder}"
        for d in params["datasets"]
        for folder in ("prepared", "concepts", "figures", *(f"seed_{s}" for s in params["seeds"]))
    }
    assert cached == expected  # one entry per seed and dataset of params.yaml
    assert all(o.get("persist") is True for o in outs.values())  # DVC must not delete Snakemake's cache


def test_git_tracks_the_small_results_and_ignores_the_rest() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["study"]
    small = [f"{RESULTS}/{p}" for p in tracked_results(params["datasets"])]
    large = [f"{RESULTS}/{params['datasets'][0]}/seed_0/ticket/round_0/metrics.json",
             f"{RESULTS}/{params['datasets'][0]}/prepared/data.pt"]  # fmt: skip
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *small, *large], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert ignored == large
