"""The prepared-dataset file: one torch file of uint8 images, labels, split and metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ticketlens.errors import UserError
from ticketlens.fileio import atomic_save, load_torch

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VALIDATION: "validation", TEST: "test"}


@dataclass
class PreparedData:
    """A prepared dataset; see docs/architecture.md for every field."""

    name: str
    images: torch.Tensor  # uint8 N x C x H x W
    labels: torch.Tensor  # int64 N
    split: torch.Tensor  # int8 N
    class_names: list[str]
    mean: list[float]
    std: list[float]
    extras: dict[str, Any] = field(default_factory=dict)  # birds: boxes, parts, attributes, masks

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def indices(self, split: int) -> torch.Tensor:
        return torch.nonzero(self.split == split).flatten()

    def float_images(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """Images as float32 in [0, 1] (the models normalise internally)."""
        images = self.images if index is None else self.images[index]
        return images.float().div_(255.0)

    def to_dict(self) -> dict[str, Any]:
        core = {
            "name": self.name,
            "images": self.images,
            "labels": self.labels,
            "split": self.split,
            "class_names": list(self.class_names),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
        }
        return {**core, **self.extras}


_CORE = ("name", "images", "labels", "split", "class_names", "mean", "std")


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images scaled to [0, 1]."""
    scaled = images.float().div(255.0)
    dims = [0, 2, 3]
    return scaled.mean(dim=dims).tolist(), scaled.std(dim=dims).clamp_min(1e-6).tolist()


def save_prepared(data: PreparedData, path: Path) -> None:
    atomic_save(data.to_dict(), path)


def load_prepared(path: Path) -> PreparedData:
    raw = load_torch(path, "prepared dataset", "run the prepare step first")
    missing = [key for key in _CORE if key not in raw]
    if missing:
        raise UserError(f"prepared dataset {path} lacks {', '.join(missing)}: delete it and re-run")
    extras = {k: v for k, v in raw.items() if k not in _CORE}
    return PreparedData(**{k: raw[k] for k in _CORE}, extras=extras)
