"""Shared fixtures (the builders they use, and every other shared builder, are in helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from helpers import make_study_dir, make_toy_data, snakemake
from ticketlens.data.prepared import save_prepared


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
    """The tiny study (tests/configs/tiny.yaml) run locally on 2 cores: its working directory."""
    workdir = make_study_dir(tmp_path_factory.mktemp("study"))
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir
