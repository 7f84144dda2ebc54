"""Shared fixtures: a tiny learnable prepared dataset, the typed settings that train on it in seconds,
helpers that build settings from the schema's defaults (the only place defaults live), and the tiny study
run locally by Snakemake (test_workflow.py, test_slurm.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ticketlens.config import study_params, validate_params
from ticketlens.data.prepared import PreparedData, channel_stats, save_prepared
from ticketlens.study import (
    DatasetSettings,
    DataSettings,
    PruningSettings,
    StudyParams,
    TcavSettings,
    TrainingSettings,
)
from tiny_study import make_study_dir, snakemake

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"
# the captum reference loop (a test and benchmark oracle, not part of the package)
sys.path.insert(0, str(ROOT / "benchmarks"))

TOY = DatasetSettings(
    data=DataSettings(root="toy"),
    model="convnet_mnist",
    model_width=0.5,
    concepts=(),
    training=TrainingSettings(
        optimizer="adam",
        lr=0.003,
        momentum=0.9,
        weight_decay=0.0,
        batch_size=32,
        iterations=40,
        eval_every=20,
        checkpoint_every=20,
        init="default",
        test_at="end",
        lr_schedule="constant",
    ),
)
TOY_PRUNING = PruningSettings(
    scope="layerwise",
    rate_conv=0.2,
    rate_fc=0.4,
    rate_output=0.1,
    exclude=(),
    one_shot=False,
    rewind_iteration=0,
)

# The smallest section the schema accepts for each dataset: the model and the required training keys.
MODELS = {"mnist": "convnet_mnist", "synthbirds": "conv4", "cub": "conv4"}
REQUIRED_TRAINING = {"optimizer": "adam", "lr": 0.001, "batch_size": 8, "iterations": 10, "eval_every": 5}


def schema_params(
    name: str = "mnist",
    dataset: dict[str, Any] | None = None,
    pruning: dict[str, Any] | None = None,
    explanations: dict[str, Any] | None = None,
    schema: Path = SCHEMA,
) -> StudyParams:
    """Typed params of a minimal params dict, every missing value filled from the schema's defaults."""
    section = {"model": MODELS[name], "training": dict(REQUIRED_TRAINING), **(dataset or {})}
    params = {
        "study": {"datasets": [name], "seeds": [0], "rounds": 1},
        "pruning": dict(pruning or {}),
        "explanations": dict(explanations or {}),
        "datasets": {name: section},
    }
    return study_params(validate_params(params, schema))


def dataset_settings(name: str, **section: Any) -> DatasetSettings:
    """`datasets.<name>` as typed settings: the keys given, the rest from the schema."""
    return schema_params(name, dataset=section).datasets[name]


def data_settings(name: str, **section: Any) -> DataSettings:
    return dataset_settings(name, **section).data


def training_settings(**section: Any) -> TrainingSettings:
    """A `training` section (with at least the schema's required keys), the rest from the schema."""
    return dataset_settings("mnist", training=section).training


def pruning_settings(**section: Any) -> PruningSettings:
    """The `pruning` section: the keys given, the rest from the schema."""
    iterations = int(section.get("rewind_iteration", 0)) + REQUIRED_TRAINING["iterations"]
    training = {**REQUIRED_TRAINING, "iterations": iterations}  # the schema asks rewind < iterations
    return schema_params(dataset={"training": training}, pruning=section).pruning


def tcav_settings(**section: Any) -> TcavSettings:
    """The `explanations.tcav` section: the keys given, the rest from the schema."""
    return schema_params(explanations={"tcav": section}).explanations.tcav


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
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the test: tiny batched kernels only contend with the other test worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    """The tiny study (tiny_study.TINY) run locally on 2 cores: its working directory."""
    workdir = make_study_dir(tmp_path_factory.mktemp("study"))
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir
