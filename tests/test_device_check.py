"""benchmarks/device_check.py runs end to end in its --smoke mode on the CPU, so the GPU check is known to
work before it ever meets a GPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_smoke_writes_every_figure(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import device_check

    out = tmp_path / "check.json"
    device_check.main(["--smoke", "--device", "cpu", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["smoke"] is True
    throughput = report["throughput"]
    assert len(throughput["bare_images_per_s"]) == len(throughput["ticketlens_images_per_s"]) == 2
    assert throughput["ratio"] > 0
    steps = report["cub_round"]["seconds"]
    assert list(steps) == ["prepare_dataset", "make_random_sets", "make_concept_set", "train_ticket",
                           "explain_ticket", "tcav_calibration", "tcav_concept"]  # fmt: skip
    assert 0 <= report["cub_round"]["test_accuracy"] <= 1
    tcav = report["tcav"]
    assert tcav["classes"] == 3 and tcav["concepts_timed"] == tcav["concepts"] == 3
    assert out.with_suffix(".md").read_text().startswith("# Device check (cpu")
    del sys.modules["device_check"]
