"""Datasets: MNIST, synthetic birds and CUB-200-2011, prepared into one cached tensor file each."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ticketlens.errors import UserError

if TYPE_CHECKING:
    from ticketlens.study import DataSettings

DATASETS = ("mnist", "synthbirds", "cub")


def prepare_dataset(name: str, settings: DataSettings, out: Path, meta: Path) -> None:
    """Prepare dataset `name` with its data settings into `out` (data.pt) and `meta` (meta.csv)."""
    # lazy: each preparer imports torch, and params validation imports this package (data.concepts)
    if name == "mnist":
        from ticketlens.data.mnist import prepare_mnist as prepare
    elif name == "synthbirds":
        from ticketlens.data.synthbirds.prepare import prepare_synthbirds as prepare
    elif name == "cub":
        from ticketlens.data.birds.prepare import prepare_cub as prepare
    else:
        raise UserError(f"unknown dataset '{name}' (allowed: {', '.join(DATASETS)})")
    prepare(settings, Path(out), Path(meta))
