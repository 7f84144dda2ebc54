"""CUB-200-2011's attribute vocabulary: the 312 attribute names in their 28 groups (`attributes.txt`
order, ids 1-based) and the 112 that Concept Bottleneck Models keep (Koh et al. 2020).

Pure Python (params validation expands `cbm112` without torch or numpy). The CBM ids are the list the
CBM authors' processed data fixes (shared/reference/cub_cbm112.tsv); `cbm112_names` checks at import
that each id names the attribute the TSV gives, so a wrong vocabulary cannot go unnoticed.
"""

from __future__ import annotations

# CUB's 15 colour words, in the order every colour group of attributes.txt lists them
COLOURS = (
    "blue", "brown", "iridescent", "purple", "rufous", "grey", "yellow", "olive", "green", "pink",
    "orange", "black", "white", "red", "buff",
)  # fmt: skip
PATTERNS = ("solid", "spotted", "striped", "multi-colored")

# (group, values) in attributes.txt order: 28 groups, 312 attributes
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("has_bill_shape", ("curved_(up_or_down)", "dagger", "hooked", "needle", "hooked_seabird",
                        "spatulate", "all-purpose", "cone", "specialized")),
    ("has_wing_color", COLOURS),
    ("has_upperparts_color", COLOURS),
    ("has_underparts_color", COLOURS),
    ("has_breast_pattern", PATTERNS),
    ("has_back_color", COLOURS),
    ("has_tail_shape", ("forked_tail", "rounded_tail", "notched_tail", "fan-shaped_tail", "pointed_tail",
                        "squared_tail")),
    ("has_upper_tail_color", COLOURS),
    ("has_head_pattern", ("spotted", "malar", "crested", "masked", "unique_pattern", "eyebrow", "eyering",
                          "plain", "eyeline", "striped", "capped")),
    ("has_breast_color", COLOURS),
    ("has_throat_color", COLOURS),
    ("has_eye_color", tuple(c for c in COLOURS if c != "iridescent")),
    ("has_bill_length", ("about_the_same_as_head", "longer_than_head", "shorter_than_head")),
    ("has_forehead_color", COLOURS),
    ("has_under_tail_color", COLOURS),
    ("has_nape_color", COLOURS),
    ("has_belly_color", COLOURS),
    ("has_wing_shape", ("rounded-wings", "pointed-wings", "broad-wings", "tapered-wings", "long-wings")),
    ("has_size", ("large_(16_-_32_in)", "small_(5_-_9_in)", "very_large_(32_-_72_in)", "medium_(9_-_16_in)",
                  "very_small_(3_-_5_in)")),
    ("has_shape", ("upright-perching_water-like", "chicken-like-marsh", "long-legged-like", "duck-like",
                   "owl-like", "gull-like", "hummingbird-like", "pigeon-like", "tree-clinging-like",
                   "hawk-like", "sandpiper-like", "upland-ground-like", "swallow-like", "perching-like")),
    ("has_back_pattern", PATTERNS),
    ("has_tail_pattern", PATTERNS),
    ("has_belly_pattern", PATTERNS),
    ("has_primary_color", COLOURS),
    ("has_leg_color", COLOURS),
    ("has_bill_color", COLOURS),
    ("has_crown_color", COLOURS),
    ("has_wing_pattern", PATTERNS),
)  # fmt: skip

ATTRIBUTE_NAMES: tuple[str, ...] = tuple(f"{group}::{value}" for group, values in GROUPS for value in values)
ATTRIBUTE_ID = {name: a for a, name in enumerate(ATTRIBUTE_NAMES, start=1)}

# attributes.txt ids (1-based) of the 112 CBM attributes
CBM112_IDS = (
    2, 5, 7, 8, 11, 15, 16, 21, 22, 24, 26, 30, 31, 36, 37, 39,
    41, 45, 46, 51, 52, 54, 55, 57, 58, 60, 64, 65, 70, 71, 73, 76,
    81, 85, 91, 92, 94, 100, 102, 107, 111, 112, 117, 118, 120, 126, 127, 132,
    133, 135, 146, 150, 152, 153, 154, 158, 159, 164, 165, 169, 173, 179, 180, 182,
    184, 188, 189, 194, 195, 197, 199, 203, 204, 209, 210, 212, 213, 214, 219, 221,
    222, 226, 236, 237, 239, 240, 241, 243, 244, 245, 250, 254, 255, 260, 261, 263,
    269, 275, 278, 284, 290, 293, 294, 295, 299, 300, 305, 306, 309, 310, 311, 312,
)  # fmt: skip
CBM112_NAMES: tuple[str, ...] = tuple(ATTRIBUTE_NAMES[a - 1] for a in CBM112_IDS)
