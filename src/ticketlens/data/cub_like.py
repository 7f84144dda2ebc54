"""A CUB-shaped folder with known answers: `ticketlens data make-cub-like`.

Writes the official archive's tree (`attributes.txt` beside `CUB_200_2011/`) at CUB's real shape: 200
classes, the 312 attributes in their 28 groups (`cub_attributes`), per-image `is_present` + certainty with
a few extra-field lines, "not visible" labels, the class-level continuous table, 15 parts with invisible
ones (the far wing and eye), boxes, some grayscale and CMYK JPEGs, landscape images of varying sizes.

Known answers (written to `class_definitions.tsv` beside the tree):
- each class is one cell of wing colour x breast pattern x crown colour x bill shape (the DEFINING groups,
  drawn at their parts by the synthbirds drawing code), so "which classes are blue-winged" is known;
- every other group has a class prototype value, shown by PROTOTYPE_RATE of the class's images (drawn
  where the group is drawn, a label only where it is not). Prototypes are spread over the CBM-112 values
  so that each is held by >= 10 classes, plus RARE_CLASSES classes holding a non-CBM value: Koh et al.'s
  procedure (class majority, >= 10 classes) applied to enough images per class gives exactly the 112.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ticketlens.data.birds.records import CERTAINTY_NAMES
from ticketlens.data.cub_attributes import ATTRIBUTE_ID, ATTRIBUTE_NAMES, CBM112_NAMES, GROUPS
from ticketlens.data.synthbirds.classes import PART_ID, PART_NAMES, class_folder
from ticketlens.data.synthbirds.drawing import render_bird, sample_bird
from ticketlens.errors import UserError

log = logging.getLogger(__name__)

GENERATOR = "ticketlens.cub_like"
GENERATOR_VERSION = 1  # bump when the output changes: an old folder is then regenerated
MANIFEST = "cub_like.json"
N_CLASSES = 200
REAL_COUNT = "cub"  # images_per_class "cub": CUB's 11,788 images (94 classes of 60, 106 of 58)
DEFINING = ("has_wing_color", "has_breast_pattern", "has_crown_color", "has_bill_shape")
# the groups the synthbirds drawing shows, and the parts each is drawn at
DRAWN = {
    "has_wing_color": ("left wing", "right wing"),
    "has_breast_pattern": ("breast",),
    "has_crown_color": ("crown",),
    "has_tail_shape": ("tail",),
    "has_bill_shape": ("beak",),
    "has_back_color": ("back",),
    "has_breast_color": ("breast",),
    "has_eye_color": ("left eye", "right eye"),
    "has_leg_color": ("left leg", "right leg"),
}
BIG_PARTS = {"has_wing_color", "has_breast_pattern", "has_tail_shape", "has_back_color", "has_breast_color"}
PROTOTYPE_RATE = 0.75  # P(an image shows its class's prototype value of a non-defining group)
RARE_EVERY = 40  # one class in 40 holds a non-CBM value of a group (5 of 200 classes: below CBM's 10)
NOT_VISIBLE_RATE = 0.05  # P(an undrawn group is labelled "not visible" in an image)
GUESS_RATE = 0.1  # P(a label's certainty is 2 "guessing")
TRAIN_FRACTION = 0.5  # CUB: 5,994 train / 5,794 test
N_SCENES = 12  # background scenes, uniformly random (no shortcut)
GRAYSCALE_EVERY, CMYK_EVERY, EXTRA_FIELD_EVERY = 50, 97, 500  # image ids: 1, 51, ... gray; 2, 99, ... CMYK
DESIGN_SEED = 20110  # the class design is part of the format, fixed whatever --seed draws the images
# CUB attributes that define a few classes yet fall below CBM's 10-class filter: the 6 blue-winged classes
# (so the default `has_wing_color::blue` concept has images and a known answer outside the 112)
RARE_DEFINING = ("has_wing_color", "blue", 34, 5)  # group, value, every, offset: classes 6, 40, ..., 176
OWNED = {MANIFEST, "attributes.txt", "class_definitions.tsv", "CUB_200_2011"}


# ------------------------------------------------------------------------------------- class design


def _cbm_values(group: str) -> list[str]:
    return [name.split("::", 1)[1] for name in CBM112_NAMES if name.startswith(group + "::")]


def class_definitions() -> list[dict[str, str]]:
    """Class k's defining values {group: value}: 200 distinct cells of the grid of the defining groups'
    CBM values (6 x 3 x 6 x 4), drawn once with DESIGN_SEED so every value is held by many classes."""
    grids = [_cbm_values(group) for group in DEFINING]
    cells = list(np.ndindex(*[len(values) for values in grids]))
    order = np.random.default_rng(DESIGN_SEED).permutation(len(cells))[:N_CLASSES]
    definitions = [
        {group: grids[g][cells[c][g]] for g, group in enumerate(DEFINING)} for c in sorted(order.tolist())
    ]
    group, value, every, offset = RARE_DEFINING
    for k in range(offset, N_CLASSES, every):
        definitions[k][group] = value  # distinct cells still: no other class has this value
    return definitions


def class_prototypes(definitions: list[dict[str, str]]) -> list[dict[str, str]]:
    """Class k's value of every group: its defining values, and for every other group a CBM value taken
    round robin (shifted per group), or for one class in RARE_EVERY a value outside CBM's 112."""
    prototypes = []
    for k, definition in enumerate(definitions):
        values = {}
        for j, (group, all_values) in enumerate(GROUPS):
            if group in definition:
                values[group] = definition[group]
                continue
            cbm = _cbm_values(group)
            rare = [v for v in all_values if v not in cbm]
            if rare and (k + j) % RARE_EVERY == 0:
                values[group] = rare[0]
            else:
                values[group] = cbm[(k + 3 * j) % len(cbm)]
        prototypes.append(values)
    return prototypes


def defining_parts(definition: dict[str, str]) -> list[int]:
    return sorted({PART_ID[part] for group in definition for part in DRAWN[group]})


def class_counts(images_per_class: int | str) -> list[int]:
    if images_per_class == REAL_COUNT:
        return [58] * 106 + [60] * 94  # 11,788 images, as many as CUB-200-2011
    n = int(images_per_class)
    if n < 2:
        raise UserError(f"images_per_class {n}: need at least 2 (one train and one test image a class)")
    return [n] * N_CLASSES


# --------------------------------------------------------------------------------------- one image


@dataclass
class Labels:
    """One image's attribute labels, in attributes.txt order."""

    present: np.ndarray  # uint8 312
    certainty: np.ndarray  # uint8 312 (1 not visible, 2 guessing, 3 probably, 4 definitely)


def image_values(rng: np.random.Generator, prototype: dict[str, str]) -> dict[str, str]:
    """The value of every group in one image: defining groups always the class's, the others its
    prototype with PROTOTYPE_RATE, else uniform over the group (the prototype included)."""
    values = {}
    for group, all_values in GROUPS:
        keep = group in DEFINING or rng.uniform() < PROTOTYPE_RATE
        values[group] = prototype[group] if keep else str(rng.choice(all_values))
    return values


def image_labels(rng: np.random.Generator, values: dict[str, str]) -> Labels:
    present = np.zeros(len(ATTRIBUTE_NAMES), dtype=np.uint8)
    certainty = np.zeros(len(ATTRIBUTE_NAMES), dtype=np.uint8)
    for group, all_values in GROUPS:
        columns = [ATTRIBUTE_ID[f"{group}::{v}"] - 1 for v in all_values]
        if group not in DRAWN and rng.uniform() < NOT_VISIBLE_RATE:
            certainty[columns] = 1  # "not visible": CUB labels every value of the group absent
            continue
        certainty[columns] = 4 if group in BIG_PARTS else 3
        if rng.uniform() < GUESS_RATE:
            certainty[columns] = 2
        present[ATTRIBUTE_ID[f"{group}::{values[group]}"] - 1] = 1
    return Labels(present, certainty)


def _landscape(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """Width and height of one image: CUB's are landscape and of varying sizes (about 500 x 375)."""
    return int(round(size * rng.uniform(1.0, 1.4))), int(round(size * rng.uniform(0.85, 1.0)))


def _save_jpeg(image: Any, image_id: int, path: Path) -> None:
    """CUB holds a few grayscale and CMYK JPEGs among the RGB ones; readers must convert them."""
    if image_id % GRAYSCALE_EVERY == 1:
        image = image.convert("L")
    elif image_id % CMYK_EVERY == 2:
        image = image.convert("CMYK")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=92)


# ------------------------------------------------------------------------------------------ folder


def generation_settings(images_per_class: int | str, image_size: int, seed: int) -> dict[str, Any]:
    """The manifest entries that identify a generation (a folder is reused only when they match)."""
    if image_size < 16:
        raise UserError(f"image_size {image_size}: need at least 16 pixels (allowed: 16 or more)")
    count: int | str = images_per_class if images_per_class == REAL_COUNT else int(images_per_class)
    class_counts(count)  # refuse a bad count before anything is written
    return {
        "generator": GENERATOR,
        "version": GENERATOR_VERSION,
        "images_per_class": count,
        "image_size": int(image_size),
        "seed": int(seed),
    }


def _existing(out: Path) -> dict[str, Any] | None:
    """The manifest of an earlier generation in out, None for an empty or absent folder; UserError when
    out holds something we did not write."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder (--out must be a new or empty folder)")
    entries = {entry.name for entry in out.iterdir()}
    if not entries:
        return None
    refuse = f"{out}: holds files that make-cub-like did not write; refusing to overwrite (use a new folder)"
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        raise UserError(refuse) from None
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR or entries - OWNED:
        raise UserError(refuse)
    return manifest


def make_cub_like(out: Path, images_per_class: str, image_size: int, seed: int) -> None:
    """`ticketlens data make-cub-like`: generate (or keep, when it holds the same generation) a CUB-shaped
    archive in `out`; written into a temporary sibling and swapped in, so a crash leaves nothing half-done."""
    out = Path(out)
    settings = generation_settings(images_per_class, image_size, seed)
    if _existing(out) == settings:
        print(f"{out}: already holds this generation ({MANIFEST}); kept")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        n = write_cub_like(tmp, settings)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{out}: CUB-shaped archive, {n} images in {N_CLASSES} classes at about {image_size} px")
    print(
        f"point datasets.cub.root at {out / 'CUB_200_2011'}; known answers in {out / 'class_definitions.tsv'}"
    )


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _images(settings: dict[str, Any]) -> Iterator[tuple[int, int, int, bool]]:
    """(image id, class index, index in class, is train) in CUB's id order (class by class)."""
    image_id = 0
    for label, count in enumerate(class_counts(settings["images_per_class"])):
        n_train = min(count - 1, max(1, round(TRAIN_FRACTION * count)))
        train = set(np.random.default_rng([settings["seed"], 1_000_000 + label]).permutation(count)[:n_train])
        for i in range(count):
            image_id += 1
            yield image_id, label, i, i in train


def write_cub_like(out: Path, settings: dict[str, Any]) -> int:
    """Write the whole archive into `out` (the manifest last); returns the number of images."""
    from PIL import Image
    from tqdm import tqdm

    root = out / "CUB_200_2011"
    size, seed = int(settings["image_size"]), int(settings["seed"])
    definitions = class_definitions()
    prototypes = class_prototypes(definitions)
    folders = [class_folder(k, d) for k, d in enumerate(definitions)]
    counts = class_counts(settings["images_per_class"])
    present_by_class = np.zeros((N_CLASSES, len(ATTRIBUTE_NAMES)))
    names = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt",
             "parts/part_locs.txt", "attributes/image_attribute_labels.txt")  # fmt: skip
    (root / "parts").mkdir(parents=True)
    (root / "attributes").mkdir()
    with ExitStack() as stack:
        files: dict[str, IO[str]] = {name: stack.enter_context(open(root / name, "w")) for name in names}
        for image_id, label, i, is_train in tqdm(
            _images(settings), total=sum(counts), desc="drawing", unit="img", mininterval=1.0,
            disable=sum(counts) < 2000,
        ):  # fmt: skip
            rng = np.random.default_rng([seed, label, i])  # one stream per image: order-independent
            values = image_values(rng, prototypes[label])
            labels = image_labels(rng, values)
            bird = sample_bird(rng, {g: values[g] for g in DRAWN}, int(rng.integers(N_SCENES)))
            rendered = render_bird(bird, N_SCENES, size, rng)
            width, height = _landscape(rng, size)
            sx, sy = width / size, height / size
            rel = f"{folders[label]}/{folders[label].split('.', 1)[1]}_{i + 1:04d}_{image_id}.jpg"
            image = rendered.image.resize((width, height), Image.Resampling.BILINEAR)
            _save_jpeg(image, image_id, root / "images" / rel)
            present_by_class[label] += labels.present
            x, y, w, h = rendered.box
            files["images.txt"].write(f"{image_id} {rel}\n")
            files["image_class_labels.txt"].write(f"{image_id} {label + 1}\n")
            files["train_test_split.txt"].write(f"{image_id} {int(is_train)}\n")
            files["bounding_boxes.txt"].write(
                f"{image_id} {x * sx:.1f} {y * sy:.1f} {w * sx:.1f} {h * sy:.1f}\n"
            )
            files["parts/part_locs.txt"].write(
                "".join(
                    f"{image_id} {k} {px * sx:.1f} {py * sy:.1f} {int(vis)}\n"
                    if vis
                    else f"{image_id} {k} 0.0 0.0 0\n"
                    for k, (px, py, vis) in enumerate(rendered.part_locs, start=1)
                )
            )
            extra = " 0" if image_id % EXTRA_FIELD_EVERY == 3 else ""  # the archive's few 6-field lines
            times = rng.uniform(1, 30, len(ATTRIBUTE_NAMES))  # the annotation time field, seconds
            files["attributes/image_attribute_labels.txt"].write(
                "".join(
                    f"{image_id} {a} {p} {c} {t:.3f}{extra if a == 1 else ''}\n"
                    for a, (p, c, t) in enumerate(
                        zip(labels.present, labels.certainty, times.tolist(), strict=True), start=1
                    )
                )
            )
    _lines(root / "classes.txt", [f"{k + 1} {folder}" for k, folder in enumerate(folders)])
    _lines(root / "parts" / "parts.txt", [f"{k} {name}" for k, name in enumerate(PART_NAMES, start=1)])
    _lines(root / "attributes" / "certainties.txt", [f"{k} {n}" for k, n in enumerate(CERTAINTY_NAMES, 1)])
    percent = 100.0 * present_by_class / np.asarray(counts)[:, None]  # CUB's class-level table, 0-100
    _lines(
        root / "attributes" / "class_attribute_labels_continuous.txt",
        [" ".join(f"{v:.6f}" for v in row) for row in percent],
    )
    _lines(out / "attributes.txt", [f"{a} {name}" for a, name in enumerate(ATTRIBUTE_NAMES, start=1)])
    _lines(out / "class_definitions.tsv", class_table(definitions, prototypes))
    (out / MANIFEST).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return sum(counts)


def class_table(definitions: list[dict[str, str]], prototypes: list[dict[str, str]]) -> list[str]:
    """The known answers, one TSV row a class: defining attributes and parts, and the prototype values
    of every other group (what the class's majority shows)."""
    rows = ["class_id\tclass_name\tdefining_attributes\tdefining_parts\tprototype_attributes"]
    for k, (definition, prototype) in enumerate(zip(definitions, prototypes, strict=True)):
        rows.append(
            "\t".join(
                [
                    str(k + 1),
                    class_folder(k, definition).split(".", 1)[1],
                    "; ".join(f"{g}::{v}" for g, v in definition.items()),
                    "; ".join(PART_NAMES[p - 1] for p in defining_parts(definition)),
                    "; ".join(f"{g}::{v}" for g, v in prototype.items() if g not in definition),
                ]
            )
        )
    return rows


def held_by_classes(prototypes: list[dict[str, str]]) -> dict[str, int]:
    """How many classes hold each attribute as their prototype (the class-level truth)."""
    counts = dict.fromkeys(ATTRIBUTE_NAMES, 0)
    for prototype in prototypes:
        for group, value in prototype.items():
            counts[f"{group}::{value}"] += 1
    return counts
