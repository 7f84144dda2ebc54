"""The CBM concept collection on a user's CUB copy: Koh et al.'s (2020) attribute selection re-derived from
the copy and compared with the published 112 (`cub_attributes.CBM112_IDS`), and how many train images
could supply each concept's set (`ticketlens data check`).

Koh et al.'s procedure, as their preprocessing code runs it: per class, count the train images labelling
an attribute present and absent, skipping "not visible" labels (is_present 0 with certainty 1); the class
has the attribute when present >= absent (a tie, an all-"not visible" class included, counts as present);
keep the attributes that at least MIN_CLASSES classes have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ticketlens.data.attribute_concepts import attribute_parts
from ticketlens.data.cub_attributes import CBM112_IDS

if TYPE_CHECKING:
    from ticketlens.data.birds.records import CubRecords

SHOWN = 10  # concept lines `data check` prints before it summarises the rest
MIN_CLASSES = 10  # Koh et al.: attributes present in at least 10 of the 200 classes


def class_majority(
    attributes: np.ndarray, certainty: np.ndarray, labels: np.ndarray, is_train: np.ndarray, n_classes: int
) -> np.ndarray:
    """Boolean classes x attributes: the class-level majority vote over train images, not-visible skipped."""
    visible = ~((attributes == 0) & (certainty == 1))
    present = np.zeros((n_classes, attributes.shape[1]))
    absent = np.zeros_like(present)
    train = is_train.astype(bool)
    np.add.at(present, labels[train], ((attributes == 1) & visible)[train])
    np.add.at(absent, labels[train], ((attributes == 0) & visible)[train])
    return present >= absent


def derive_cbm_ids(records: CubRecords, min_classes: int = MIN_CLASSES) -> list[int]:
    """attributes.txt ids (1-based) that Koh et al.'s procedure keeps on this copy."""
    held = class_majority(
        records.attributes, records.certainty, records.labels, records.is_train, len(records.class_folders)
    )
    return [int(a) + 1 for a in np.flatnonzero(held.sum(axis=0) >= min_classes)]


@dataclass
class CbmComparison:
    derived: list[int]
    extra: list[int]  # kept on this copy, not in the published 112
    missing: list[int]  # published, not kept on this copy


def compare_with_published(records: CubRecords) -> CbmComparison:
    derived = derive_cbm_ids(records)
    published = set(CBM112_IDS)
    return CbmComparison(
        derived=derived,
        extra=sorted(set(derived) - published),
        missing=sorted(published - set(derived)),
    )


def comparison_lines(records: CubRecords, comparison: CbmComparison) -> list[str]:
    """What `data check` says about the collection: one line when the sets agree, else the differences."""
    names = records.attribute_names
    head = (
        f"cbm112: Koh et al.'s procedure on this copy (class majority over train images, not visible "
        f"skipped, >= {MIN_CLASSES} classes) keeps {len(comparison.derived)} attributes"
    )
    if not comparison.extra and not comparison.missing:
        return [head + ": the published 112 exactly"]

    def listed(ids: list[int]) -> str:
        shown = ", ".join(f"{a} {names[a - 1]}" for a in ids[:8])
        return shown + (f", ... ({len(ids)} in all)" if len(ids) > 8 else "")

    lines = [head + "; `concepts: [cbm112]` uses the published 112, which differ:"]
    if comparison.extra:
        lines.append(f"  kept here, not published: {listed(comparison.extra)}")
    if comparison.missing:
        lines.append(f"  published, not kept here: {listed(comparison.missing)}")
    return lines


def concept_image_counts(records: CubRecords, concepts: list[str], min_certainty: int) -> dict[str, int]:
    """Per attribute concept: the train images that show it (is_present, certainty >= min_certainty) with
    one of its parts visible (part crops; any image for a whole-bird attribute), before the random sets
    take their share."""
    index = {name: a for a, name in enumerate(records.attribute_names)}
    part_index = {name: p for p, name in enumerate(records.part_names)}
    counts = {}
    for concept in concepts:
        if concept not in index:
            continue
        a = index[concept]
        shows = (
            records.is_train & (records.attributes[:, a] == 1) & (records.certainty[:, a] >= min_certainty)
        )
        parts = [part_index[p] for p in attribute_parts(concept) if p in part_index]
        if parts:
            shows &= (records.part_locs[:, parts, 2] > 0).any(axis=1)
        counts[concept] = int(shows.sum())
    return counts


def count_lines(counts: dict[str, int], set_size: int) -> list[str]:
    """A summary line, then one line per concept that cannot fill a set of `set_size` images."""
    if not counts:
        return []
    values = np.array(list(counts.values()))
    lines = [
        f"concept images (train, certainty >= the minimum, part visible): {len(counts)} concepts, "
        f"min {values.min()}, median {int(np.median(values))}, max {values.max()}"
    ]
    short = [(concept, n) for concept, n in sorted(counts.items(), key=lambda item: item[1]) if n < set_size]
    for concept, n in short[:SHOWN]:
        if n < 2:
            lines.append(f"concept {concept}: {n} images show it; its set cannot be built (needs >= 2)")
        else:
            lines.append(
                f"concept {concept}: {n} images show it, fewer than set_size {set_size}: its set holds {n}"
            )
    if len(short) > SHOWN:
        lines.append(
            f"... and {len(short) - SHOWN} more concepts under set_size {set_size} (--counts-out lists all)"
        )
    return lines
