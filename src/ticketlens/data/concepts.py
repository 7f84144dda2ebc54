"""TCAV concept sets: procedural strokes (MNIST), procedural textures and attribute concepts (birds).

This module must stay importable without torch for `check_concept_names` (params validation).
"""

from __future__ import annotations

from collections.abc import Iterable

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
