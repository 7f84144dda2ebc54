"""Synthetic birds with known answers, written in the CUB_200_2011 layout (see docs/synthbirds.md).

Each class is a combination of a few *defining* attribute values (wing colour x breast pattern x ...);
every other attribute varies at random, so only the defining ones are causal. Every image comes with
a per-part label map (`part_masks/`), CUB-style part locations and a `shortcut` flag: a background
scene that matches the class at `shortcut_rate` in train and at chance in test (Waterbirds-style).
`prepare_synthbirds` generates (or reuses) the folder and reads it back through the CUB reader.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ticketlens.data.concepts import texture_pattern
from ticketlens.data.cub import CERTAINTY_NAMES
from ticketlens.errors import UserError

if TYPE_CHECKING:
    from ticketlens.study import DataSettings

log = logging.getLogger(__name__)

GENERATOR = "ticketlens.synthbirds"
GENERATOR_VERSION = 1  # bump when the drawing changes: an old folder is then regenerated
MANIFEST = "synthbirds.json"
TRAIN_FRACTION = 0.7  # of each class; CUB uses about half, we keep more to learn from few images
SUPERSAMPLE = 2  # draw at 2x and downsample: anti-aliased edges, half-pixel boxes and part centres

# CUB's 15 parts, in CUB's order: part id k (1-based) is PART_NAMES[k - 1] and label k in the masks.
PART_NAMES = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
    "right eye", "right leg", "right wing", "tail", "throat",
)  # fmt: skip
PART_ID = {name: k for k, name in enumerate(PART_NAMES, start=1)}


@dataclass(frozen=True)
class Group:
    """One CUB-style attribute group (`has_wing_color`) with its values and the parts it describes."""

    name: str
    values: tuple[str, ...]
    parts: tuple[str, ...]
    certainty: int  # 4 "definitely" for big parts, 3 "probably" for small ones


GROUPS = (
    Group(
        "has_wing_color",
        ("blue", "red", "yellow", "green", "purple", "orange"),
        ("left wing", "right wing"),
        4,
    ),
    Group("has_breast_pattern", ("solid", "striped", "spotted"), ("breast",), 4),
    Group("has_crown_color", ("black", "red", "blue", "yellow", "white", "green"), ("crown",), 3),
    Group("has_tail_shape", ("forked_tail", "rounded_tail", "pointed_tail"), ("tail",), 4),
    Group("has_bill_shape", ("cone", "hooked", "needle"), ("beak",), 3),
    Group("has_back_color", ("brown", "grey", "olive", "buff"), ("back",), 4),
    Group("has_breast_color", ("white", "buff", "grey"), ("breast",), 4),
    Group("has_eye_color", ("black", "red", "yellow"), ("left eye", "right eye"), 3),
    Group("has_leg_color", ("black", "orange", "grey"), ("left leg", "right leg"), 3),
)
GROUP = {group.name: group for group in GROUPS}
# Defining groups in the order they are brought in as n_classes grows (most visible first).
DEFINING_ORDER = (
    "has_wing_color",
    "has_breast_pattern",
    "has_crown_color",
    "has_tail_shape",
    "has_bill_shape",
)
BACKGROUND = "has_background"  # values scene_0..scene_{n-1}: the shortcut feature, not a bird attribute
SCENE_KINDS = ("plain", "dotted", "checkered", "zigzag")  # no stripes: keep them for the breast

COLOURS = {
    "blue": (35, 85, 230), "red": (220, 35, 35), "yellow": (245, 210, 25), "green": (35, 165, 55),
    "purple": (135, 45, 190), "orange": (245, 125, 15), "black": (25, 25, 25), "white": (245, 245, 240),
    "brown": (125, 85, 50), "grey": (135, 135, 135), "olive": (115, 115, 55), "buff": (215, 185, 130),
}  # fmt: skip
BREAST_BASE = {"white": (240, 240, 232), "buff": (228, 205, 155), "grey": (185, 185, 185)}
BILL_COLOUR = (55, 50, 45)

# ------------------------------------------------------------------------------- class definitions


def defining_sizes(n_classes: int) -> dict[str, int]:
    """How many values each defining group uses.

    Use the fewest groups (at least two: wing colour and breast pattern) whose grid can hold
    n_classes, then grow the smallest of them (earliest first) until it does: small studies get only
    the most visible features, e.g. 6 classes = 3 wing colours x 2 breast patterns.
    """
    caps = [len(GROUP[g].values) for g in DEFINING_ORDER]
    used = next((m for m in range(2, len(caps) + 1) if math.prod(caps[:m]) >= n_classes), None)
    if used is None or n_classes < 2:
        raise UserError(f"synthbirds: n_classes {n_classes} is not supported (allowed: 2..{math.prod(caps)})")
    sizes = dict.fromkeys(DEFINING_ORDER, 1)
    while math.prod(sizes.values()) < n_classes:
        growable = [g for g, cap in zip(DEFINING_ORDER[:used], caps, strict=False) if sizes[g] < cap]
        sizes[min(growable, key=lambda g: sizes[g])] += 1
    return sizes


def class_definitions(n_classes: int) -> list[dict[str, str]]:
    """Class k's defining values {group: value}: the first n_classes cells of the grid, mixed radix
    with the first group varying fastest (so consecutive classes differ in the most visible part)."""
    sizes = defining_sizes(n_classes)
    groups = [g for g in DEFINING_ORDER if sizes[g] > 1]
    definitions = []
    for k in range(n_classes):
        rest, definition = k, {}
        for group in groups:
            rest, index = divmod(rest, sizes[group])
            definition[group] = GROUP[group].values[index]
        definitions.append(definition)
    return definitions


_NAME_SUFFIX = {
    "has_wing_color": "winged",
    "has_breast_pattern": "breasted",
    "has_crown_color": "crowned",
    "has_tail_shape": "tailed",
    "has_bill_shape": "billed",
}


def class_folder(k: int, definition: dict[str, str]) -> str:
    """CUB-style folder name, e.g. '004.Blue_winged_Striped_breasted_Bird'."""
    words = [
        f"{value.split('_')[0].capitalize()}_{_NAME_SUFFIX[group]}" for group, value in definition.items()
    ]
    return f"{k + 1:03d}.{'_'.join(words)}_Bird"


def attribute_names(n_classes: int) -> list[str]:
    names = [f"{group.name}::{value}" for group in GROUPS for value in group.values]
    return names + [f"{BACKGROUND}::scene_{s}" for s in range(n_classes)]


def defining_parts(definition: dict[str, str]) -> list[int]:
    return sorted({PART_ID[part] for group in definition for part in GROUP[group].parts})


# ---------------------------------------------------------------------------------------- sampling


@dataclass
class Bird:
    """Everything random about one image."""

    values: dict[str, str]  # group -> value, for every group
    scene: int
    facing: int  # +1 looks right (we see its right side), -1 looks left
    angle: float  # radians
    span: float  # fraction of the image the bird's longer side covers
    offset: tuple[float, float]  # where in the free room the bird sits, each in [0, 1]
    pattern_phase: float
    jitter: float  # brightness factor of the bird's colours


def sample_bird(rng: np.random.Generator, definition: dict[str, str], scene: int) -> Bird:
    values = {group.name: str(rng.choice(group.values)) for group in GROUPS}
    values.update(definition)  # defining groups are fixed by the class, the rest stay random
    return Bird(
        values=values,
        scene=scene,
        facing=int(rng.choice((-1, 1))),
        angle=float(rng.uniform(-0.25, 0.25)),
        span=float(rng.uniform(0.72, 0.95)),
        offset=(float(rng.uniform()), float(rng.uniform())),
        pattern_phase=float(rng.uniform()),
        jitter=float(rng.uniform(0.88, 1.08)),
    )


# ----------------------------------------------------------------------------------------- drawing
# Shapes live in a local frame: bird looking towards +x, y pointing down, body centre at the origin,
# body 0.8 units long. Every shape is a polygon so one affine map places it in the image.

Polygon = list[tuple[float, float]]


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, a0: float = 0, a1: float = 360, rot: float = 0
) -> Polygon:
    """Ellipse outline (or a pie slice from a0 to a1 degrees, which then includes the centre)."""
    steps = max(6, int(abs(a1 - a0) / 10))
    cos_r, sin_r = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    points = []
    for j in range(steps + 1):
        t = math.radians(a0 + (a1 - a0) * j / steps)
        x, y = rx * math.cos(t), ry * math.sin(t)
        points.append((cx + x * cos_r - y * sin_r, cy + x * sin_r + y * cos_r))
    if a1 - a0 < 360:
        points.append((cx, cy))
    return points


def _thick_line(p0: tuple[float, float], p1: tuple[float, float], width: float) -> Polygon:
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / length * width / 2, dx / length * width / 2
    return [
        (p0[0] + nx, p0[1] + ny),
        (p1[0] + nx, p1[1] + ny),
        (p1[0] - nx, p1[1] - ny),
        (p0[0] - nx, p0[1] - ny),
    ]


TAILS = {
    "forked_tail": [(-0.28, -0.10), (-0.84, -0.27), (-0.64, -0.03), (-0.86, 0.16), (-0.28, 0.07)],
    "rounded_tail": [(-0.28, -0.10), *_ellipse(-0.30, -0.02, 0.48, 0.48, 200, 160)[:-1], (-0.28, 0.07)],
    "pointed_tail": [(-0.28, -0.10), (-0.90, 0.0), (-0.28, 0.07)],
}
BILLS = {
    "cone": [(0.52, -0.28), (0.74, -0.19), (0.52, -0.11)],
    "hooked": [(0.52, -0.28), (0.68, -0.26), (0.76, -0.18), (0.72, -0.10), (0.68, -0.17), (0.52, -0.13)],
    "needle": [(0.52, -0.245), (0.92, -0.19), (0.52, -0.155)],
}
HEAD = (0.38, -0.20, 0.17)  # centre x, y and radius


def bird_shapes(bird: Bird) -> list[tuple[str, Polygon, tuple[int, int, int]]]:
    """(part, polygon, colour) in drawing order (back to front), in the local frame.

    The visible side gets the wing, eye and near leg of that side (CUB's left/right parts).
    """
    side = "right" if bird.facing > 0 else "left"
    far = "left" if side == "right" else "right"
    v = bird.values
    back, breast = COLOURS[v["has_back_color"]], BREAST_BASE[v["has_breast_color"]]
    belly = tuple(int(c * 0.93) for c in breast)
    legs = COLOURS[v["has_leg_color"]]
    hx, hy, hr = HEAD
    shapes = [
        ("tail", TAILS[v["has_tail_shape"]], back),
        (
            f"{far} leg",
            _thick_line((0.0, 0.18), (-0.04, 0.47), 0.05) + _thick_line((-0.04, 0.47), (0.07, 0.48), 0.04),
            legs,
        ),
        (
            f"{side} leg",
            _thick_line((0.11, 0.18), (0.09, 0.47), 0.05) + _thick_line((0.09, 0.47), (0.20, 0.48), 0.04),
            legs,
        ),
        ("back", _ellipse(0, 0, 0.40, 0.25), back),
        ("belly", _ellipse(0, 0, 0.40, 0.25, 100, 165), belly),
        ("breast", _ellipse(0, 0, 0.40, 0.25, -40, 100), breast),
        (f"{side} wing", _ellipse(-0.12, -0.07, 0.31, 0.135, rot=-9), COLOURS[v["has_wing_color"]]),
        ("nape", _ellipse(hx, hy, hr, hr, 120, 220), back),
        ("crown", _ellipse(hx, hy, hr, hr, -140, -60), COLOURS[v["has_crown_color"]]),
        ("forehead", _ellipse(hx, hy, hr, hr, -60, 20), back),
        ("throat", _ellipse(hx, hy, hr, hr, 20, 120), breast),
        ("beak", BILLS[v["has_bill_shape"]], BILL_COLOUR),
        (f"{side} eye", _ellipse(0.45, -0.24, 0.05, 0.05), COLOURS[v["has_eye_color"]]),
        (f"{side} eye", _ellipse(0.455, -0.24, 0.024, 0.024), (10, 10, 10)),  # pupil
    ]
    return [(part, poly, _scale_colour(colour, bird.jitter)) for part, poly, colour in shapes]


def _scale_colour(colour: Sequence[int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c * factor))) for c in colour)  # type: ignore[return-value]


def breast_pattern_shapes(pattern: str, phase: float) -> list[Polygon]:
    """Bold marks over the breast area (clipped to the visible breast later): big enough to survive
    the downsampling to 32 px."""
    if pattern == "striped":
        period, width = 0.19, 0.095
        return [
            _thick_line((x, -0.35), (x + 0.05, 0.35), width)
            for x in np.arange(-0.3 + phase * period, 0.5, period)
        ]
    if pattern == "spotted":
        period = 0.15
        spots = []
        for row, y in enumerate(np.arange(-0.2 + phase * period, 0.3, period)):
            for x in np.arange(-0.25 + (row % 2) * period / 2, 0.45, period):
                spots.append(_ellipse(float(x), float(y), 0.048, 0.048))
        return spots
    return []


def _placement(bird: Bird, shapes: Sequence[Polygon], canvas: int) -> np.ndarray:
    """2 x 3 affine matrix local -> canvas pixels: flip, rotate, scale to `span`, place at `offset`."""
    points = np.concatenate([np.asarray(poly) for poly in shapes])
    cos_a, sin_a = math.cos(bird.angle), math.sin(bird.angle)
    linear = np.array([[cos_a, -sin_a], [sin_a, cos_a]]) @ np.diag([bird.facing, 1.0])
    moved = points @ linear.T
    low, high = moved.min(axis=0), moved.max(axis=0)
    scale = bird.span * canvas / float((high - low).max())
    room = canvas - (high - low) * scale  # free space left on each axis
    shift = room * np.asarray(bird.offset) - low * scale
    return np.hstack([linear * scale, shift[:, None]])


def _apply(matrix: np.ndarray, poly: Polygon) -> list[tuple[float, float]]:
    array = np.asarray(poly) @ matrix[:, :2].T + matrix[:, 2]
    return [tuple(p) for p in array.tolist()]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


def draw_background(scene: int, n_scenes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A pastel scene: hue and texture kind identify the scene (the shortcut feature); brightness,
    gradient and texture scale/angle/phase are nuisance."""
    base = _hsv(scene / n_scenes + rng.uniform(-0.02, 0.02), rng.uniform(0.25, 0.4), rng.uniform(0.72, 0.9))
    yy, xx = np.mgrid[0:size, 0:size] / size
    direction = rng.uniform(0, 2 * math.pi)
    ramp = 1.0 + 0.12 * ((xx - 0.5) * math.cos(direction) + (yy - 0.5) * math.sin(direction))
    image = base[None, None, :] * ramp[..., None]
    kind = SCENE_KINDS[scene % len(SCENE_KINDS)]
    if kind != "plain":
        pattern = texture_pattern(kind, size, rng, period=size * rng.uniform(0.12, 0.2))
        image = image * (1.0 + 0.16 * (pattern[..., None] - 0.5))
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw_distractors(draw: Any, size: int, rng: np.random.Generator) -> None:
    """0-3 muted shapes behind the bird: clutter that is not bird and not class-related."""
    for _ in range(int(rng.integers(0, 4))):
        radius = size * rng.uniform(0.05, 0.11)
        cx, cy = rng.uniform(0, size, 2)
        colour = tuple(int(c) for c in _hsv(rng.uniform(), rng.uniform(0.15, 0.5), rng.uniform(0.35, 0.9)))
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
        elif kind == 1:
            draw.rectangle([cx - radius, cy - radius * 0.7, cx + radius, cy + radius * 0.7], fill=colour)
        else:
            draw.polygon(
                [(cx, cy - radius), (cx + radius, cy + radius), (cx - radius, cy + radius)], fill=colour
            )


@dataclass
class Rendered:
    image: Any  # PIL RGB, size x size
    mask: np.ndarray  # uint8 size x size: 0 background, k = part k
    box: tuple[float, float, float, float]  # x, y, w, h in image pixels (sub-pixel)
    part_locs: np.ndarray  # float32 15 x 3: part-pixel centroids, visible flag


def render_bird(bird: Bird, n_scenes: int, size: int, rng: np.random.Generator) -> Rendered:
    """Draw one image, its part label map, box and part locations."""
    from PIL import Image, ImageDraw

    canvas = size * SUPERSAMPLE
    # the background is smooth: draw it at the output size and upsample (a third of the cost)
    background = Image.fromarray(draw_background(bird.scene, n_scenes, size, rng))
    image = background.resize((canvas, canvas), Image.Resampling.BILINEAR)
    _draw_distractors(ImageDraw.Draw(image), canvas, rng)
    labels = Image.new("L", (canvas, canvas), 0)
    shapes = bird_shapes(bird)
    matrix = _placement(bird, [poly for _, poly, _ in shapes], canvas)
    draw_rgb, draw_label = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    for part, poly, colour in shapes:
        placed = _apply(matrix, poly)
        draw_rgb.polygon(placed, fill=colour)
        draw_label.polygon(placed, fill=PART_ID[part])
    label_array = np.asarray(labels)
    pattern = bird.values["has_breast_pattern"]
    if pattern != "solid":  # marks only where the breast is visible, in a dark ink
        marks = Image.new("L", (canvas, canvas), 0)
        draw_marks = ImageDraw.Draw(marks)
        for poly in breast_pattern_shapes(pattern, bird.pattern_phase):
            draw_marks.polygon(_apply(matrix, poly), fill=255)
        where = (np.asarray(marks) > 0) & (label_array == PART_ID["breast"])
        pixels = np.array(image)
        pixels[where] = (45, 30, 20)
        image = Image.fromarray(pixels)
    return Rendered(
        image=image.resize((size, size), Image.Resampling.BOX),
        mask=np.asarray(labels.resize((size, size), Image.Resampling.NEAREST)),
        box=_box(label_array, SUPERSAMPLE),
        part_locs=_part_centres(label_array, SUPERSAMPLE),
    )


def _box(labels: np.ndarray, factor: int) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(labels)
    x0, y0 = xs.min() / factor, ys.min() / factor
    return x0, y0, (xs.max() + 1) / factor - x0, (ys.max() + 1) / factor - y0


def _part_centres(labels: np.ndarray, factor: int) -> np.ndarray:
    """Centroid of each part's visible pixels (CUB marks one point per part); (0, 0, 0) if unseen."""
    flat = labels.ravel().astype(np.int64)
    ys, xs = np.divmod(np.arange(flat.size), labels.shape[1])
    count = np.bincount(flat, minlength=len(PART_NAMES) + 1)[1:]
    sum_x = np.bincount(flat, weights=xs + 0.5, minlength=len(PART_NAMES) + 1)[1:]
    sum_y = np.bincount(flat, weights=ys + 0.5, minlength=len(PART_NAMES) + 1)[1:]
    locs = np.zeros((len(PART_NAMES), 3), dtype=np.float32)
    seen = count > 0
    locs[seen, 0] = sum_x[seen] / count[seen] / factor
    locs[seen, 1] = sum_y[seen] / count[seen] / factor
    locs[seen, 2] = 1
    return locs


# -------------------------------------------------------------------------------------- the folder

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


def class_table(n_classes: int, sep: str = "\t") -> list[str]:
    """The class definitions as table lines (TSV for the folder, ' | ' rows for markdown)."""
    rows = [["class_id", "class_name", "defining_attributes", "defining_parts"]]
    for k, definition in enumerate(class_definitions(n_classes)):
        rows.append(
            [
                str(k + 1),
                class_folder(k, definition).split(".", 1)[1],
                "; ".join(f"{g}::{v}" for g, v in definition.items()),
                "; ".join(PART_NAMES[p - 1] for p in defining_parts(definition)),
            ]
        )
    return [sep.join(row) for row in rows]


# ---------------------------------------------------------------------------------------- prepare


def _read_shortcut(root: Path, n: int) -> np.ndarray:
    from ticketlens.data.cub import read_rows

    rows = read_rows(root / "shortcut.txt", "<image_id> <shortcut 0|1> <scene>", [int, int, int])
    shortcut = np.zeros(n, dtype=np.uint8)
    for _, (image_id, flag, _) in rows:
        shortcut[image_id - 1] = flag  # synthbirds ids are 1..N in order
    return shortcut


def prepare_synthbirds(data_settings: DataSettings, out: Path) -> None:
    """Generate (or reuse) the synthetic birds in `root`, read them back through the CUB reader and
    write data.pt with the synthbirds extras plus meta.csv."""
    import torch

    from ticketlens.data.cub import carve_validation, load_bird_images, load_square, read_cub, save_birds

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
    save_birds("synthbirds", records, split, arrays, out, extras=extras, extra_columns={"shortcut": shortcut})
