"""Which concept names each dataset can build: params validation checks them before any job runs, so this
module imports neither torch nor numpy (`procedural` keeps its imports inside its functions).

A concept list may name a *collection*, expanded in place to its members: `cbm112` is the 112 CUB
attributes that Concept Bottleneck Models keep (`cub_attributes`), so `concepts: [cbm112, texture_dotted]`
is one params line for 113 concepts.
"""

from __future__ import annotations

from collections.abc import Iterable

from ticketlens.data.cub_attributes import CBM112_NAMES
from ticketlens.data.procedural import STROKES, TEXTURES
from ticketlens.errors import UserError

BIRD_DATASETS = ("synthbirds", "cub")
# A ticket's random and calibration sets sit beside its concepts (concepts/random_sets.pt, tcav/calibration.csv)
RESERVED = ("random", "calibration")
# collection name -> (its concepts, the datasets whose attributes they are)
COLLECTIONS = {"cbm112": (CBM112_NAMES, ("cub",))}


def expand_concepts(names: Iterable[str]) -> tuple[str, ...]:
    """The concept list with every collection replaced by its members, each name once (first place kept)."""
    expanded: dict[str, None] = {}
    for name in names:
        for member in COLLECTIONS[name][0] if name in COLLECTIONS else (name,):
            expanded.setdefault(member, None)
    return tuple(expanded)


def check_concept_names(dataset: str, names: Iterable[str]) -> None:
    """Raise UserError naming the first concept that dataset cannot build, and what is allowed."""
    names = list(names)
    for name in names:
        if name in COLLECTIONS and dataset not in COLLECTIONS[name][1]:
            raise UserError(
                f"concept collection '{name}' names attributes of {', '.join(COLLECTIONS[name][1])}, "
                f"not of dataset {dataset} (allowed here: single concept names)"
            )
    if dataset in BIRD_DATASETS:
        allowed = f"{', '.join(TEXTURES)}, a CUB attribute such as has_wing_color::blue"
        allowed += ", or the collection cbm112 (cub)" if dataset == "cub" else ""
    else:
        allowed = ", ".join(STROKES)
    for name in expand_concepts(names):
        ok = name in STROKES if dataset not in BIRD_DATASETS else (name in TEXTURES or "::" in name)
        if not ok or name.startswith(RESERVED):
            raise UserError(f"unknown concept '{name}' for dataset {dataset} (allowed: {allowed})")
