"""TCAV concept sets: procedural strokes (MNIST), procedural textures and attribute concepts (birds).

This module must stay importable without torch for `check_concept_names` (params validation).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ticketlens.errors import UserError

STROKES = ("stroke_horizontal", "stroke_vertical", "stroke_diagonal", "stroke_loop")
TEXTURES = ("texture_striped", "texture_dotted", "texture_zigzag", "texture_checkered")
BIRD_DATASETS = ("synthbirds", "cub")


def check_concept_names(dataset: str, names: Iterable[str]) -> None:
    """Raise UserError naming the first concept that dataset cannot build, and what is allowed."""
    if dataset in BIRD_DATASETS:
        allowed = f"{', '.join(TEXTURES)} or a CUB attribute such as has_wing_color::blue"
    else:
        allowed = ", ".join(STROKES)
    for name in names:
        ok = name in STROKES if dataset not in BIRD_DATASETS else (name in TEXTURES or "::" in name)
        if not ok or name.startswith("random"):
            raise UserError(f"unknown concept '{name}' for dataset {dataset} (allowed: {allowed})")


# ------------------------------------------------------------------------------ procedural patterns
# numpy only (imported lazily) so that check_concept_names stays light for params validation.


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
