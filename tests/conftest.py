"""Shared fixtures: a tiny learnable prepared dataset and the lottery config that trains on it in seconds;
the tiny study run locally by Snakemake (test_workflow.py, test_slurm.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ticketlens.data.prepared import PreparedData, channel_stats, save_prepared
from tiny_study import make_study_dir, snakemake

TOY_CONFIG = {
    "dataset": {
        "model": "convnet_mnist",
        "model_width": 0.5,
        "training": {
            "optimizer": "adam",
            "lr": 0.003,
            "momentum": 0.9,
            "weight_decay": 0.0,
            "batch_size": 32,
            "iterations": 40,
            "eval_every": 20,
            "checkpoint_every": 20,
        },
    },
    "pruning": {
        "scope": "layerwise",
        "rate_conv": 0.2,
        "rate_fc": 0.4,
        "rate_output": 0.1,
        "exclude": [],
        "one_shot": False,
        "rewind_iteration": 0,
    },
}


def make_toy_data(
    n: int = 400, classes: int = 4, size: int = 28, channels: int = 1, seed: int = 0
) -> PreparedData:
    """Noise images with a bright class-specific band: learnable in a few dozen steps."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = (torch.rand(n, channels, size, size, generator=generator) * 80).to(torch.uint8)
    band = size // classes
    for c in range(classes):
        images[labels == c, :, c * band : (c + 1) * band, :] = 230
    split = torch.zeros(n, dtype=torch.int8)
    split[int(0.7 * n) : int(0.8 * n)] = 1
    split[int(0.8 * n) :] = 2
    mean, std = channel_stats(images[split == 0])
    return PreparedData("toy", images, labels, split, [f"class{c}" for c in range(classes)], mean, std)


@pytest.fixture
def toy_data_path(tmp_path: Path) -> Path:
    path = tmp_path / "data.pt"
    save_prepared(make_toy_data(), path)
    return path


@pytest.fixture
def toy_config() -> dict:
    return copy.deepcopy(TOY_CONFIG)


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    """The tiny study (tiny_study.TINY) run locally on 2 cores: its working directory."""
    workdir = make_study_dir(tmp_path_factory.mktemp("study"))
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir
