"""Synthetic birds: sampling one bird and drawing it (image, part label map, box, part locations).

Shapes live in a local frame and are placed by one affine map; the image is drawn at `SUPERSAMPLE` times
its size and downsampled (anti-aliased edges). Every random choice comes from the caller's generator, so
one image is one seeded stream.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ticketlens.data.procedural import texture_pattern
from ticketlens.data.synthbirds.classes import GROUPS, PART_ID, PART_NAMES

SUPERSAMPLE = 2  # draw at 2x and downsample: anti-aliased edges, half-pixel boxes and part centres
SCENE_KINDS = ("plain", "dotted", "checkered", "zigzag")  # no stripes: keep them for the breast

COLOURS = {
    "blue": (35, 85, 230), "red": (220, 35, 35), "yellow": (245, 210, 25), "green": (35, 165, 55),
    "purple": (135, 45, 190), "orange": (245, 125, 15), "black": (25, 25, 25), "white": (245, 245, 240),
    "brown": (125, 85, 50), "grey": (135, 135, 135), "olive": (115, 115, 55), "buff": (215, 185, 130),
    # the rest of CUB's 15 colour words (the CUB-shaped generator, `ticketlens.data.cub_like`)
    "iridescent": (20, 175, 170), "rufous": (175, 70, 30), "pink": (240, 140, 185),
}  # fmt: skip
BREAST_BASE = {"white": (240, 240, 232), "buff": (228, 205, 155), "grey": (185, 185, 185)}
BILL_COLOUR = (55, 50, 45)


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
    # CUB's other tail shapes (cub_like)
    "notched_tail": [(-0.28, -0.10), (-0.80, -0.17), (-0.72, -0.03), (-0.80, 0.10), (-0.28, 0.07)],
    "fan-shaped_tail": [(-0.28, -0.06), (-0.82, -0.38), (-0.92, -0.03), (-0.82, 0.32), (-0.28, 0.05)],
    "squared_tail": [(-0.28, -0.10), (-0.84, -0.12), (-0.84, 0.09), (-0.28, 0.07)],
}
BILLS = {
    "cone": [(0.52, -0.28), (0.74, -0.19), (0.52, -0.11)],
    "hooked": [(0.52, -0.28), (0.68, -0.26), (0.76, -0.18), (0.72, -0.10), (0.68, -0.17), (0.52, -0.13)],
    "needle": [(0.52, -0.245), (0.92, -0.19), (0.52, -0.155)],
    # CUB's other bill shapes (cub_like)
    "curved_(up_or_down)": [(0.52, -0.26), (0.70, -0.22), (0.84, -0.08), (0.80, -0.06), (0.66, -0.16),
                            (0.52, -0.15)],
    "dagger": [(0.52, -0.27), (0.84, -0.20), (0.52, -0.13)],
    "hooked_seabird": [(0.52, -0.27), (0.78, -0.25), (0.84, -0.15), (0.79, -0.12), (0.76, -0.18),
                       (0.52, -0.14)],
    "spatulate": [(0.52, -0.25), (0.70, -0.24), (0.80, -0.28), (0.80, -0.12), (0.70, -0.16), (0.52, -0.15)],
    "all-purpose": [(0.52, -0.27), (0.70, -0.21), (0.52, -0.13)],
    "specialized": [(0.52, -0.28), (0.64, -0.30), (0.78, -0.22), (0.64, -0.12), (0.52, -0.12)],
}  # fmt: skip
HEAD = (0.38, -0.20, 0.17)  # centre x, y and radius


def bird_shapes(bird: Bird) -> list[tuple[str, Polygon, tuple[int, int, int]]]:
    """(part, polygon, colour) in drawing order (back to front), in the local frame.

    The visible side gets the wing, eye and near leg of that side (CUB's left/right parts).
    """
    side = "right" if bird.facing > 0 else "left"
    far = "left" if side == "right" else "right"
    v = bird.values
    breast_colour = v["has_breast_color"]
    back, breast = COLOURS[v["has_back_color"]], BREAST_BASE.get(breast_colour, COLOURS[breast_colour])
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
    if pattern == "multi-colored":  # CUB's fourth pattern: the lower half of the breast in the ink
        return [[(-0.45, 0.02), (0.5, 0.02), (0.5, 0.35), (-0.45, 0.35)]]
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


def draw_scene(scene: int, n_scenes: int, size: int, rng: np.random.Generator) -> Any:
    """A bird-free scene with its clutter, as a PIL RGB image at SUPERSAMPLE x size (the canvas a bird
    is drawn on; downsample with BOX to `size`)."""
    from PIL import Image, ImageDraw

    canvas = size * SUPERSAMPLE
    # the background is smooth: draw it at the output size and upsample (a third of the cost)
    background = Image.fromarray(draw_background(scene, n_scenes, size, rng))
    image = background.resize((canvas, canvas), Image.Resampling.BILINEAR)
    _draw_distractors(ImageDraw.Draw(image), canvas, rng)
    return image


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
    image = draw_scene(bird.scene, n_scenes, size, rng)
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
