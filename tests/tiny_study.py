"""The tiny study that the end-to-end tests run: params, fake MNIST idx files, a snakemake runner."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

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


def snakemake(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    command = [str(BIN / "snakemake"), "-s", str(ROOT / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def make_study_dir(workdir: Path) -> Path:
    """A working directory with the tiny study's params.yaml and its idx files."""
    write_idx(workdir / "idx")
    (workdir / "params.yaml").write_text(yaml.safe_dump(TINY))
    return workdir


TIMING_FIELDS = {"train_seconds", "images_per_second"}  # the only fields two runs may differ in


def _without_timing(value):
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def assert_same_results(expected_root: Path, actual_root: Path) -> None:
    """Two runs of the tiny study wrote the same files with the same bytes, except timing fields."""
    expected = sorted(p.relative_to(expected_root) for p in expected_root.rglob("*") if p.is_file())
    actual = sorted(p.relative_to(actual_root) for p in actual_root.rglob("*") if p.is_file())
    assert actual == expected, f"only in one run: {sorted(set(expected) ^ set(actual))}"
    timed = 0
    for relative in expected:
        a, b = (expected_root / relative).read_bytes(), (actual_root / relative).read_bytes()
        if a == b:
            continue
        assert relative.name == "metrics.json", f"{relative} differs"
        expected_json, actual_json = json.loads(a), json.loads(b)
        assert expected_json.keys() >= TIMING_FIELDS, f"{relative} differs and has no timing fields"
        assert _without_timing(expected_json) == _without_timing(actual_json), f"{relative} differs"
        timed += 1
    assert any(p.suffix == ".pt" for p in expected) and any(p.suffix == ".npz" for p in expected)
    assert timed <= 8  # one metrics.json per ticket: 2 datasets x (dense, ticket, reinit, randmask)
