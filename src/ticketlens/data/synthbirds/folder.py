"""Synthetic birds: the generated folder in the CUB_200_2011 layout (plus part_masks/, class_definitions.tsv,
shortcut.txt and a manifest), written atomically and reused only when its manifest matches the settings.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ticketlens.data.birds.records import CERTAINTY_NAMES
from ticketlens.data.synthbirds.classes import (
    BACKGROUND,
    GROUP,
    PART_NAMES,
    attribute_names,
    class_definitions,
    class_folder,
    class_table,
)
from ticketlens.data.synthbirds.drawing import Bird, Rendered, render_bird, sample_bird
from ticketlens.errors import UserError

if TYPE_CHECKING:
    from ticketlens.study import DataSettings

log = logging.getLogger(__name__)

GENERATOR = "ticketlens.synthbirds"
GENERATOR_VERSION = 1  # bump when the drawing changes: an old folder is then regenerated
MANIFEST = "synthbirds.json"
TRAIN_FRACTION = 0.7  # of each class; CUB uses about half, we keep more to learn from few images

SETTING_KEYS = ("n_classes", "images_per_class", "generate_size", "shortcut_rate", "generator_seed")
# Top-level entries a generation writes; a folder holding anything else is not ours to replace.
OWNED = {
    MANIFEST, "images", "part_masks", "parts", "attributes", "images.txt", "classes.txt",
    "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "attributes.txt",
    "class_definitions.tsv", "shortcut.txt",
}  # fmt: skip


def generation_settings(settings: DataSettings) -> dict[str, Any]:
    """The manifest entries that identify a generation (a folder is reused only when they match)."""
    values = {key: getattr(settings, key) for key in SETTING_KEYS}
    values["shortcut_rate"] = float(values["shortcut_rate"])
    return {"generator": GENERATOR, "version": GENERATOR_VERSION, **values}


def _existing(root: Path) -> dict[str, Any] | None:
    """The manifest of a complete earlier generation in root, None for an empty or absent folder;
    UserError when root holds something we did not write."""
    if not root.exists():
        return None
    if not root.is_dir():
        raise UserError(f"{root}: exists and is not a folder (datasets.synthbirds.root must be a folder)")
    entries = {entry.name for entry in root.iterdir()}
    if not entries:
        return None
    refuse = (
        f"{root}: holds files that the synthbirds generator did not write; refusing to overwrite "
        "(point datasets.synthbirds.root at a new or empty folder)"
    )
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        raise UserError(refuse) from None
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR or entries - OWNED:
        raise UserError(refuse)
    return manifest


def ensure_generated(root: Path, settings: dict[str, Any]) -> bool:
    """Generate into root unless it already holds this exact generation. True if it generated.

    Writes into a temporary sibling and swaps it in, so a crash never leaves a half-written root.
    """
    root = Path(root)
    if _existing(root) == settings:
        log.info("synthbirds: reusing %s (same settings)", root)
        return False
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_synthbirds(tmp, settings)
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            os.replace(root, old)
            os.replace(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _scene(rng: np.random.Generator, label: int, n_classes: int, is_train: bool, rate: float) -> int:
    """Train: the class's own scene with probability `rate`, else any scene; test: any scene."""
    if is_train and rng.uniform() < rate:
        return label
    return int(rng.integers(n_classes))


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _attribute_certainty(names: list[str]) -> np.ndarray:
    """Certainty per attribute: the group's (big parts 4, small parts 3); background scenes 4."""
    return np.array([4 if n.startswith(BACKGROUND) else GROUP[n.split("::")[0]].certainty for n in names])


def _train_members(seed: int, label: int, per_class: int) -> set[int]:
    """Which images of a class are train: a seeded TRAIN_FRACTION, at least one train and one test."""
    n_train = min(per_class - 1, max(1, round(TRAIN_FRACTION * per_class)))
    order = np.random.default_rng([seed, 1_000_000 + label]).permutation(per_class)
    return set(order[:n_train].tolist())


class _Layout:
    """Collects the CUB text files line by line while images are drawn, then writes them."""

    def __init__(self, root: Path, n_classes: int) -> None:
        self.root = root
        self.names = attribute_names(n_classes)
        self.column = {name: a for a, name in enumerate(self.names)}
        self.certainty = _attribute_certainty(self.names)
        self.present_by_class = np.zeros((n_classes, len(self.names)))
        self.text: dict[str, list[str]] = {
            key: [] for key in ("images", "labels", "split", "boxes", "parts", "attrs", "shortcut")
        }

    def add(
        self, image_id: int, rel: str, label: int, is_train: bool, bird: Bird, rendered: Rendered
    ) -> None:
        (self.root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / "part_masks" / rel).parent.mkdir(parents=True, exist_ok=True)
        rendered.image.save(self.root / "images" / f"{rel}.jpg", quality=95, subsampling=0)
        _save_mask(rendered.mask, self.root / "part_masks" / f"{rel}.png")
        present = np.zeros(len(self.names), dtype=np.int64)
        present[[self.column[f"{g}::{v}"] for g, v in bird.values.items()]] = 1
        present[self.column[f"{BACKGROUND}::scene_{bird.scene}"]] = 1
        self.present_by_class[label] += present
        text = self.text
        text["images"].append(f"{image_id} {rel}.jpg")
        text["labels"].append(f"{image_id} {label + 1}")
        text["split"].append(f"{image_id} {int(is_train)}")
        text["boxes"].append(f"{image_id} " + " ".join(f"{v:.2f}" for v in rendered.box))
        text["parts"] += [
            f"{image_id} {k} {x:.2f} {y:.2f} {int(vis)}"
            for k, (x, y, vis) in enumerate(rendered.part_locs, 1)
        ]
        text["attrs"] += [
            f"{image_id} {a + 1} {p} {c} 0.0"
            for a, (p, c) in enumerate(zip(present, self.certainty, strict=True))
        ]
        text["shortcut"].append(f"{image_id} {int(bird.scene == label)} {bird.scene}")

    def write(self, folders: list[str], per_class: int) -> None:
        root, text = self.root, self.text
        _lines(root / "images.txt", text["images"])
        _lines(root / "classes.txt", [f"{k + 1} {folder}" for k, folder in enumerate(folders)])
        _lines(root / "image_class_labels.txt", text["labels"])
        _lines(root / "train_test_split.txt", text["split"])
        _lines(root / "bounding_boxes.txt", text["boxes"])
        _lines(root / "parts" / "parts.txt", [f"{k} {name}" for k, name in enumerate(PART_NAMES, 1)])
        _lines(root / "parts" / "part_locs.txt", text["parts"])
        _lines(root / "attributes.txt", [f"{a + 1} {name}" for a, name in enumerate(self.names)])
        _lines(root / "attributes" / "image_attribute_labels.txt", text["attrs"])
        certainties = [f"{k} {name}" for k, name in enumerate(CERTAINTY_NAMES, 1)]
        _lines(root / "attributes" / "certainties.txt", certainties)
        percent = 100.0 * self.present_by_class / per_class  # CUB's class-level table, 0-100
        rows = [" ".join(f"{v:.4f}" for v in row) for row in percent]
        _lines(root / "attributes" / "class_attribute_labels_continuous.txt", rows)
        _lines(root / "class_definitions.tsv", class_table(len(folders), sep="\t"))
        _lines(root / "shortcut.txt", text["shortcut"])


def write_synthbirds(root: Path, settings: dict[str, Any]) -> None:
    """Write a full CUB_200_2011-layout folder (plus part_masks/, class_definitions.tsv,
    shortcut.txt and the manifest, written last)."""
    n_classes, per_class = int(settings["n_classes"]), int(settings["images_per_class"])
    size, seed = int(settings["generate_size"]), int(settings["generator_seed"])
    definitions = class_definitions(n_classes)
    folders = [class_folder(k, d) for k, d in enumerate(definitions)]
    layout = _Layout(root, n_classes)
    for label, definition in enumerate(definitions):
        train = _train_members(seed, label, per_class)
        for i in range(per_class):
            rng = np.random.default_rng([seed, label, i])  # one stream per image: order-independent
            scene = _scene(rng, label, n_classes, i in train, float(settings["shortcut_rate"]))
            bird = sample_bird(rng, definition, scene)
            rendered = render_bird(bird, n_classes, size, rng)
            rel = f"{folders[label]}/{folders[label].split('.', 1)[1]}_{i + 1:04d}"
            layout.add(label * per_class + i + 1, rel, label, i in train, bird, rendered)
    layout.write(folders, per_class)
    (root / MANIFEST).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _save_mask(mask: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(mask, mode="L").save(path)
