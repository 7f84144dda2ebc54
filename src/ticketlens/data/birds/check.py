"""`ticketlens data check`: validate a dataset folder in the CUB layout and print its counts; on a copy
with CUB's 312 attributes also the CBM collection's derivation (`data.cbm`) and per-concept image counts."""

from __future__ import annotations

from pathlib import Path

from ticketlens.data import cbm
from ticketlens.data.birds.images import _map_images, check_image
from ticketlens.data.birds.records import read_cub
from ticketlens.data.concept_names import expand_concepts
from ticketlens.data.cub_attributes import ATTRIBUTE_NAMES
from ticketlens.fileio import write_csv


def check_cub(
    root: Path,
    concepts: list[str] | None = None,
    min_certainty: int = 3,
    set_size: int = 100,
    counts_out: Path | None = None,
) -> str:
    """Validate a CUB copy (text files, then every image decoded and its box checked) and return a summary.

    The image and box checks are the ones prepare runs while it loads the images (`_map_images`).
    `concepts` (collections allowed; default cbm112 on a copy with CUB's vocabulary): count the images
    that could supply each concept's set and name those that cannot fill `set_size`; the full table goes
    to `counts_out` (CSV) when given.
    """
    records = read_cub(root)
    for _ in _map_images(records, check_image, "decoding images"):
        pass
    n_train = int(records.is_train.sum())
    continuous = "present" if records.class_attributes is not None else "absent (optional)"
    lines = [
        f"CUB-200-2011 at {records.root}",
        f"images: {len(records.paths)} ({n_train} train, {len(records.paths) - n_train} test)",
        f"classes: {len(records.class_folders)}",
        f"attributes: {len(records.attribute_names)} (names from {records.attributes_file})",
        f"parts: {len(records.part_names)}",
        f"class-level continuous attributes: {continuous}",
        "every image decodes and every bounding box lies inside its image",
    ]
    cub_vocabulary = tuple(records.attribute_names) == ATTRIBUTE_NAMES
    if cub_vocabulary:
        lines += cbm.comparison_lines(records, cbm.compare_with_published(records))
    names = list(expand_concepts(concepts if concepts else (["cbm112"] if cub_vocabulary else [])))
    counts = cbm.concept_image_counts(records, names, min_certainty)
    lines += cbm.count_lines(counts, set_size)
    if counts_out is not None and counts:
        import pandas as pd

        index = {name: a for a, name in enumerate(records.attribute_names, start=1)}
        table = pd.DataFrame(
            {
                "concept": list(counts),
                "attribute_id": [index[c] for c in counts],
                "images": list(counts.values()),
            }
        )
        write_csv(table, Path(counts_out))
        lines.append(f"per-concept image counts: {counts_out}")
    return "\n".join(lines)


def check_data(
    dataset: str,
    root: Path,
    concepts: list[str] | None = None,
    min_certainty: int = 3,
    set_size: int = 100,
    counts_out: Path | None = None,
) -> None:
    """`ticketlens data check`: print the counts of a dataset folder in the CUB layout, or fail in one line."""
    print(check_cub(Path(root), concepts, min_certainty, set_size, counts_out))
