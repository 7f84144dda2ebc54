"""`ticketlens data check`: validate a dataset folder in the CUB layout and print its counts."""

from __future__ import annotations

from pathlib import Path

from ticketlens.data.birds.images import _map_images, check_image
from ticketlens.data.birds.records import read_cub


def check_cub(root: Path) -> str:
    """Validate a CUB copy (text files, then every image decoded and its box checked) and return a summary.

    The image and box checks are the ones prepare runs while it loads the images (`_map_images`).
    """
    records = read_cub(root)
    for _ in _map_images(records, check_image, "decoding images"):
        pass
    n_train = int(records.is_train.sum())
    continuous = "present" if records.class_attributes is not None else "absent (optional)"
    return "\n".join(
        [
            f"CUB-200-2011 at {records.root}",
            f"images: {len(records.paths)} ({n_train} train, {len(records.paths) - n_train} test)",
            f"classes: {len(records.class_folders)}",
            f"attributes: {len(records.attribute_names)} (names from {records.attributes_file})",
            f"parts: {len(records.part_names)}",
            f"class-level continuous attributes: {continuous}",
            "every image decodes and every bounding box lies inside its image",
        ]
    )


def check_data(dataset: str, root: Path) -> None:
    """`ticketlens data check`: print the counts of a dataset folder in the CUB layout, or fail in one line."""
    print(check_cub(Path(root)))
