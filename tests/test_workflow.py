"""End to end: Snakemake on a tiny config in a temporary folder (MNIST from idx files + synthbirds)."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY_TRAINING = {
    "optimizer": "adam",
    "lr": 0.003,
    "batch_size": 16,
    "iterations": 12,
    "eval_every": 6,
    "checkpoint_every": 6,
}
TINY = {
    "study": {
        "datasets": ["mnist", "synthbirds"],
        "seeds": [0],
        "rounds": 1,
        "controls": ["reinit", "randmask"],
    },
    "pruning": {"rate_conv": 0.3, "rate_fc": 0.5, "rate_output": 0.2},
    "explanations": {
        "probe_per_class": 1,
        "tcav": {
            "n_random_sets": 3,
            "set_size": 5,
            "inputs_per_class": 2,
            "n_counterparts": 1,
            "n_null_draws": 19,
            "n_calibration_sets": 1,
        },
    },
    "datasets": {
        "mnist": {
            "source": "idx",
            "root": "idx",
            "validation_size": 20,
            "model": "convnet_mnist",
            "model_width": 0.25,
            "concepts": ["stroke_horizontal"],
            "training": TINY_TRAINING,
        },
        "synthbirds": {
            "root": "synthbirds",
            "n_classes": 3,
            "images_per_class": 24,
            "generate_size": 32,
            "image_size": 32,
            "model": "conv4",
            "model_width": 0.125,
            "concepts": ["texture_dotted"],
            "training": TINY_TRAINING,
        },
    },
}


def write_idx(folder: Path, n_train: int = 120, n_test: int = 30) -> None:
    """The four MNIST idx files with random digits (gzipped, as distributed)."""
    folder.mkdir(parents=True)
    rng = __import__("random").Random(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = bytes(rng.randrange(256) for _ in range(n * 28 * 28))
        labels = bytes(i % 10 for i in range(n))
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + pixels)
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + labels)


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    command = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    write_idx(workdir / "idx")
    (workdir / "params.yaml").write_text(yaml.safe_dump(TINY))
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


@pytest.mark.slow
def test_every_target_exists(study):
    for dataset in ("mnist", "synthbirds"):
        base = study / "results" / dataset
        for branch, r in (("ticket", 0), ("ticket", 1), ("reinit", 1), ("randmask", 1)):
            folder = base / "seed_0" / branch / f"round_{r}"
            for name in ("checkpoint.pt", "metrics.json", "saliency.npz", "saliency.csv", "consistency.csv",
                         "tcav/random.csv"):  # fmt: skip
                assert (folder / name).stat().st_size > 0, folder / name
            concept = TINY["datasets"][dataset]["concepts"][0]  # no "::": its file stem is its name
            assert (folder / "tcav" / f"{concept}.csv").stat().st_size > 0, folder
        for name in ("summary.csv", "tcav_summary.csv", "findings.json", "report.md"):
            assert (base / name).stat().st_size > 0
    assert (study / "results" / "report.md").exists()
    assert (study / "results" / "metrics.json").exists()
    # one log per rule and job: logs/{dataset}/{rule}.log, per ticket logs/{dataset}/seed_s/{branch}/round_r/
    for dataset in ("mnist", "synthbirds"):
        for rule in ("prepare_dataset", "make_random_sets", "summarize_dataset", "build_dataset_report"):
            assert (study / "logs" / dataset / f"{rule}.log").exists(), (dataset, rule)
        for branch, r in (("ticket", 0), ("ticket", 1), ("reinit", 1), ("randmask", 1)):
            folder = study / "logs" / dataset / "seed_0" / branch / f"round_{r}"
            for rule in ("train_ticket", "explain_ticket", "tcav_null"):
                assert (folder / f"{rule}.log").stat().st_size > 0, folder / f"{rule}.log"
    assert (study / "logs" / "build_study_report.log").exists()


@pytest.mark.slow
def test_second_run_has_nothing_to_do(study):
    result = snakemake(study, "--cores", "2", "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_invalid_params_stop_before_any_job(tmp_path):
    params = {**TINY, "pruning": {**TINY["pruning"], "rate_fc": 1.5}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = snakemake(tmp_path, "--cores", "1")
    assert result.returncode != 0
    assert "pruning.rate_fc" in result.stderr and "(0, 1)" in result.stderr
    assert not (tmp_path / "results").exists()
