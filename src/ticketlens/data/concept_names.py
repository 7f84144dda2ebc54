"""Which concept names each dataset can build: params validation checks them before any job runs, so this
module imports neither torch nor numpy (`procedural` keeps its imports inside its functions)."""

from __future__ import annotations

from collections.abc import Iterable

from ticketlens.data.procedural import STROKES, TEXTURES
from ticketlens.errors import UserError

BIRD_DATASETS = ("synthbirds", "cub")
# A ticket's random and calibration sets sit beside its concepts (concepts/random_sets.pt, tcav/calibration.csv)
RESERVED = ("random", "calibration")


def check_concept_names(dataset: str, names: Iterable[str]) -> None:
    """Raise UserError naming the first concept that dataset cannot build, and what is allowed."""
    if dataset in BIRD_DATASETS:
        allowed = f"{', '.join(TEXTURES)} or a CUB attribute such as has_wing_color::blue"
    else:
        allowed = ", ".join(STROKES)
    for name in names:
        ok = name in STROKES if dataset not in BIRD_DATASETS else (name in TEXTURES or "::" in name)
        if not ok or name.startswith(RESERVED):
            raise UserError(f"unknown concept '{name}' for dataset {dataset} (allowed: {allowed})")
