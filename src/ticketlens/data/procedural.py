"""Procedural concept images: pen strokes (MNIST concepts) and two-tone textures (bird concepts, and the
synthbirds background scenes).

numpy and PIL are imported inside the functions, so `ticketlens.data.concept_names.check_concept_names` (params
validation) can import the names from here without loading them.
"""

from __future__ import annotations

import colorsys
from typing import Any

from ticketlens.errors import UserError

STROKES = ("stroke_horizontal", "stroke_vertical", "stroke_diagonal", "stroke_loop")
TEXTURES = ("texture_striped", "texture_dotted", "texture_zigzag", "texture_checkered")


def texture_pattern(kind: str, size: int, rng: Any, period: float | None = None) -> Any:
    """A size x size float32 map in {0, 1} of one texture, at a random angle, phase and scale.

    kind: striped, dotted, checkered or zigzag (the `texture_*` concepts and the synthbirds
    background scenes share this so both are the same family of patterns).
    """
    import numpy as np

    period = float(period if period is not None else rng.uniform(size / 8, size / 4))
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    u = xx * np.cos(angle) + yy * np.sin(angle) + rng.uniform(0, period)
    v = -xx * np.sin(angle) + yy * np.cos(angle) + rng.uniform(0, period)
    if kind == "striped":
        out = (u % period) < period * rng.uniform(0.35, 0.55)
    elif kind == "dotted":
        du, dv = u % period - period / 2, v % period - period / 2
        out = np.hypot(du, dv) < period * rng.uniform(0.2, 0.32)
    elif kind == "checkered":
        out = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif kind == "zigzag":
        triangle = np.abs((u / period) % 1.0 - 0.5) * 2.0  # 0..1 saw-tooth across the stripes
        out = ((v + triangle * period * rng.uniform(0.6, 1.2)) % period) < period * 0.45
    else:
        raise UserError(
            f"unknown texture '{kind}' (allowed: {', '.join(t.split('_', 1)[1] for t in TEXTURES)})"
        )
    return out.astype(np.float32)


def _contrasting_colours(rng: Any, channels: int) -> tuple[Any, Any]:
    """Two random colours at least 35% apart in brightness, so the pattern, not a colour, is the
    concept."""
    import numpy as np

    v1 = rng.uniform(0.0, 1.0)
    v2 = rng.uniform(0.0, max(0.0, v1 - 0.35)) if v1 > 0.5 else rng.uniform(min(1.0, v1 + 0.35), 1.0)
    if channels == 1:
        return np.array([v1 * 255.0]), np.array([v2 * 255.0])
    hues, sats = rng.uniform(0, 1, 2), rng.uniform(0, 0.8, 2)
    return (
        np.array(colorsys.hsv_to_rgb(hues[0], sats[0], v1)) * 255.0,
        np.array(colorsys.hsv_to_rgb(hues[1], sats[1], v2)) * 255.0,
    )


def texture_images(kind: str, n: int, size: int, channels: int, rng: Any) -> Any:
    """n texture images, uint8 n x C x H x W: one pattern kind, random colours/scale/angle/phase."""
    import numpy as np

    images = np.zeros((n, channels, size, size), dtype=np.uint8)
    for i in range(n):
        pattern = texture_pattern(kind, size, rng)[None]  # 1 x H x W
        fg, bg = _contrasting_colours(rng, channels)
        image = pattern * fg[:, None, None] + (1.0 - pattern) * bg[:, None, None]
        image += rng.normal(0.0, 6.0, image.shape)  # a little sensor noise
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
    return images


def stroke_image(kind: str, size: int, rng: Any) -> Any:
    """One pen stroke, white on black like MNIST digits, at a random place, length and thickness."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    factor = 4  # draw large and downsample: smooth, anti-aliased edges like scanned pen strokes
    unit = size * factor / 28.0  # coordinates below are in MNIST's 28-pixel frame
    canvas = Image.new("L", (size * factor, size * factor), 0)
    draw = ImageDraw.Draw(canvas)
    width = int(round(rng.uniform(2.4, 4.0) * unit))
    u = lambda low, high: rng.uniform(low, high) * unit  # noqa: E731 - short local helper

    if kind == "stroke_horizontal":
        y = u(7, 21)
        draw.line([(u(3, 9), y), (u(19, 25), y + u(-1.5, 1.5))], fill=255, width=width)
    elif kind == "stroke_vertical":
        x = u(7, 21)
        draw.line([(x, u(3, 9)), (x + u(-1.5, 1.5), u(19, 25))], fill=255, width=width)
    elif kind == "stroke_diagonal":
        x0, y0, length = u(3, 9), u(3, 9), u(12, 17)
        if rng.uniform() < 0.5:  # either direction of slant
            draw.line([(x0, y0), (x0 + length, y0 + length)], fill=255, width=width)
        else:
            draw.line([(x0 + length, y0), (x0, y0 + length)], fill=255, width=width)
    elif kind == "stroke_loop":
        cx, cy, rx, ry = u(11, 17), u(11, 17), u(4, 7), u(5, 8.5)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=255, width=width)
    else:
        raise UserError(f"unknown stroke '{kind}' (allowed: {', '.join(STROKES)})")
    canvas = canvas.filter(ImageFilter.GaussianBlur(0.5 * unit))
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def stroke_images(kind: str, n: int, size: int, channels: int, rng: Any) -> Any:
    import numpy as np

    strokes = np.stack([stroke_image(kind, size, rng) for _ in range(n)])[:, None]
    return np.repeat(strokes, channels, axis=1)
