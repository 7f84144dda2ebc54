"""Prepare birds in the CUB layout into `data.pt` and `meta.csv` (CUB itself: `prepare_cub`; the
synthetic birds add their extras in `ticketlens.data.synthbirds.prepare`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ticketlens.data import prepared
from ticketlens.data.birds.images import BirdArrays, load_bird_images
from ticketlens.data.birds.records import CubRecords, read_cub
from ticketlens.fileio import write_csv

if TYPE_CHECKING:
    from ticketlens.study import DataSettings

log = logging.getLogger(__name__)


def carve_validation(labels: np.ndarray, is_train: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Split codes (0 train, 1 validation, 2 test): a seeded, class-stratified share of train.

    A class with >= 2 train images gives at least one to validation whatever the fraction (> 0): at
    CUB's 200 classes with a few images each, round(0.1 x 2) = 0 used to leave validation empty
    ("0 images for 200 classes") on the default fraction; one train image always stays."""
    split = np.where(is_train, prepared.TRAIN, prepared.TEST).astype(np.int8)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = np.flatnonzero(is_train & (labels == label))
        wanted = max(1, int(round(fraction * len(members)))) if fraction > 0 else 0
        n_val = min(wanted, len(members) - 1)  # keep >= 1 train image
        if n_val > 0:
            split[rng.permutation(members)[:n_val]] = prepared.VALIDATION
    return split


def _slug(name: str) -> str:
    return name.replace(" ", "_")


def bird_meta_frame(records: CubRecords, split: np.ndarray, arrays: BirdArrays) -> Any:
    """meta.csv: one row per image; attributes compactly as 'index:certainty' of the present ones."""
    import pandas as pd

    names = records.class_names
    columns: dict[str, Any] = {
        "index": np.arange(len(records.paths)),
        "image_id": records.image_ids,
        "path": records.paths,
        "split": [prepared.SPLIT_NAMES[int(s)] for s in split],
        "label": records.labels,
        "class_name": [names[label] for label in records.labels],
    }
    for k, key in enumerate(("box_x", "box_y", "box_w", "box_h")):
        columns[key] = np.round(arrays.boxes[:, k], 2)
    for p, part in enumerate(records.part_names):
        columns[f"{_slug(part)}_x"] = np.round(arrays.part_locs[:, p, 0], 2)
        columns[f"{_slug(part)}_y"] = np.round(arrays.part_locs[:, p, 1], 2)
        columns[f"{_slug(part)}_visible"] = arrays.part_locs[:, p, 2].astype(np.int8)
    columns["attributes"] = [
        " ".join(f"{a}:{records.certainty[i, a]}" for a in np.flatnonzero(records.attributes[i]))
        for i in range(len(records.paths))
    ]
    return pd.DataFrame(columns)


def save_birds(
    name: str,
    records: CubRecords,
    split: np.ndarray,
    arrays: BirdArrays,
    out: Path,
    meta: Path | None = None,
    extras: dict[str, Any] | None = None,
    extra_columns: dict[str, Any] | None = None,
) -> None:
    """Write `out` (data.pt, the contract in docs/architecture.md) and `meta` (meta.csv, default
    `prepared.meta_beside`), both atomically."""
    import torch

    images = torch.from_numpy(arrays.images)
    split_t = torch.from_numpy(split.astype(np.int8))
    mean, std = prepared.channel_stats(images[split_t == prepared.TRAIN])
    bird_extras: dict[str, Any] = {
        "boxes": torch.from_numpy(arrays.boxes),
        "part_names": list(records.part_names),
        "part_locs": torch.from_numpy(arrays.part_locs),
        "attribute_names": list(records.attribute_names),
        "attributes": torch.from_numpy(records.attributes),
        "certainty": torch.from_numpy(records.certainty),
    }
    data = prepared.PreparedData(
        name=name,
        images=images,
        labels=torch.from_numpy(records.labels.astype(np.int64)),
        split=split_t,
        class_names=records.class_names,
        mean=mean,
        std=std,
        extras={**bird_extras, **(extras or {})},
    )
    out = Path(out)
    prepared.check_prepared(data, out)
    table = bird_meta_frame(records, split, arrays)
    for key, values in (extra_columns or {}).items():
        table[key] = values
    write_csv(table, Path(meta) if meta is not None else prepared.meta_beside(out))
    prepared.save_prepared(data, out)


def prepare_cub(settings: DataSettings, out: Path, meta: Path | None = None) -> None:
    """Prepare a CUB_200_2011 copy (params `datasets.cub`) into `out` (data.pt) and `meta` (meta.csv)."""
    records = read_cub(Path(settings.root))
    size = int(settings.image_size)
    split = carve_validation(records.labels, records.is_train, float(settings.validation_fraction), 0)
    log.info("CUB: %d images from %s at %d px", len(records.paths), records.root, size)
    arrays = load_bird_images(records, size, bool(settings.crop_to_box))
    save_birds("cub", records, split, arrays, out, meta)
