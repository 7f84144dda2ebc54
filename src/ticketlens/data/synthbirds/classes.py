"""Synthetic birds: the classes and their attributes (parts, attribute groups, class definitions).

Each class is a combination of a few *defining* attribute values (wing colour x breast pattern x ...);
every other attribute varies at random, so only the defining ones are causal (docs/synthbirds.md).
Pure Python: the drawing (`drawing`) and the folder writer (`folder`) use these names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ticketlens.errors import UserError

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
