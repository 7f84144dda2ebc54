"""Synthetic birds with known answers, written in the CUB_200_2011 layout (see docs/synthbirds.md).

Each class is a combination of a few *defining* attribute values (wing colour x breast pattern x ...);
every other attribute varies at random, so only the defining ones are causal. Every image comes with
a per-part label map (`part_masks/`), CUB-style part locations and a `shortcut` flag: a background
scene that matches the class at `shortcut_rate` in train and at chance in test (Waterbirds-style).
`prepare_synthbirds` generates (or reuses) the folder and reads it back through the CUB reader.

The concerns live in their own modules of this package: `classes` (parts, attribute groups, class
definitions), `drawing` (sampling and drawing one bird), `folder` (the generated folder and its manifest).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ticketlens.data.birds.images import load_bird_images, load_square
from ticketlens.data.birds.prepare import carve_validation, save_birds
from ticketlens.data.birds.records import read_cub, read_rows
from ticketlens.data.synthbirds.classes import class_definitions, defining_parts
from ticketlens.data.synthbirds.folder import ensure_generated, generation_settings

if TYPE_CHECKING:
    from ticketlens.study import DataSettings


def _read_shortcut(root: Path, n: int) -> np.ndarray:
    rows = read_rows(root / "shortcut.txt", "<image_id> <shortcut 0|1> <scene>", [int, int, int])
    shortcut = np.zeros(n, dtype=np.uint8)
    for _, (image_id, flag, _) in rows:
        shortcut[image_id - 1] = flag  # synthbirds ids are 1..N in order
    return shortcut


def prepare_synthbirds(data_settings: DataSettings, out: Path, meta: Path | None = None) -> None:
    """Generate (or reuse) the synthetic birds in `root`, read them back through the CUB reader and
    write `out` (data.pt) with the synthbirds extras and `meta` (meta.csv)."""
    import torch

    root = Path(data_settings.root)
    settings = generation_settings(data_settings)
    ensure_generated(root, settings)
    records = read_cub(root)
    size, crop = int(data_settings.image_size), bool(data_settings.crop_to_box)
    seed = int(settings["generator_seed"])
    split = carve_validation(records.labels, records.is_train, float(data_settings.validation_fraction), seed)
    arrays = load_bird_images(records, size, crop)
    masks = np.stack(
        [
            load_square(
                root / "part_masks" / Path(rel).with_suffix(".png"), records.boxes[i], size, crop, mode="L"
            )[0]
            for i, rel in enumerate(records.paths)
        ]
    )
    definitions = class_definitions(int(settings["n_classes"]))
    index = {name: a for a, name in enumerate(records.attribute_names)}
    shortcut = _read_shortcut(root, len(records.paths))
    extras = {
        "part_masks": torch.from_numpy(masks),
        "defining_parts": {k: defining_parts(d) for k, d in enumerate(definitions)},
        "defining_attributes": {
            k: [index[f"{g}::{v}"] for g, v in d.items()] for k, d in enumerate(definitions)
        },
        "shortcut": torch.from_numpy(shortcut),
    }
    save_birds(
        "synthbirds", records, split, arrays, out, meta, extras=extras, extra_columns={"shortcut": shortcut}
    )
