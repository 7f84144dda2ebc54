"""The prepared-dataset file: one torch file of uint8 images, labels, split and metadata."""

from __future__ import annotations

import math
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


# What to change when the validation split is too small, per dataset (the params keys that size it).
VALIDATION_KEYS = {
    "mnist": "datasets.mnist.validation_size",
    "synthbirds": "datasets.synthbirds.validation_fraction or datasets.synthbirds.images_per_class",
    "cub": "datasets.cub.validation_fraction or add images",
}


def check_prepared(data: PreparedData, out: Path) -> None:
    """Refuse, in one line, a dataset that cannot be trained and evaluated, before `out` is written.

    Every dataset passes here right before it is saved: train and test must be non-empty, validation
    needs at least one image per class (it drives early stopping and the loss curve; an empty one used
    to crash training with a ZeroDivisionError), mean and std must be finite, labels index class_names.
    """

    def refuse(problem: str) -> UserError:
        return UserError(f"{out}: not written: {problem}")

    counts = {split: int((data.split == split).sum()) for split in SPLIT_NAMES}
    for split in (TRAIN, TEST):
        if counts[split] == 0:
            name = SPLIT_NAMES[split]
            raise refuse(f"the {name} split is empty (allowed: at least one {name} image)")
    n_val, k = counts[VALIDATION], data.num_classes
    if n_val < k:
        hint = f"; raise {VALIDATION_KEYS[data.name]}" if data.name in VALIDATION_KEYS else ""
        raise refuse(
            f"the validation split has {n_val} images for {k} classes "
            f"(allowed: at least one image per class, here >= {k}{hint})"
        )
    for name, values in (("mean", data.mean), ("std", data.std)):
        if not all(math.isfinite(float(v)) for v in values):
            raise refuse(
                f"the train images' channel {name} is {[float(v) for v in values]} "
                "(allowed: finite numbers; are the train images empty?)"
            )
    low, high = int(data.labels.min()), int(data.labels.max())
    if low < 0 or high >= k:
        raise refuse(f"labels run {low}..{high} but there are {k} class names (allowed: 0..{k - 1})")


def meta_beside(data_path: Path) -> Path:
    """Where a preparer called without an explicit `meta` writes meta.csv: beside data.pt (as the rule does)."""
    return Path(data_path).parent / "meta.csv"


def save_prepared(data: PreparedData, path: Path) -> None:
    atomic_save(data.to_dict(), path)


def load_prepared(path: Path) -> PreparedData:
    raw = load_torch(path, "prepared dataset", "run the prepare step first")
    missing = [key for key in _CORE if key not in raw]
    if missing:
        raise UserError(f"prepared dataset {path} lacks {', '.join(missing)}: delete it and re-run")
    extras = {k: v for k, v in raw.items() if k not in _CORE}
    return PreparedData(**{k: raw[k] for k in _CORE}, extras=extras)
