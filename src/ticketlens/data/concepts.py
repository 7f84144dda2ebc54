"""TCAV concept and random sets: the set files the `make_random_sets` and `make_concept_set` rules write.

Strokes and textures come from `procedural`, bird attribute concepts from `attribute_concepts`. This
module must stay importable without torch for `check_concept_names` (params validation).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ticketlens.data.procedural import STROKES, TEXTURES, stroke_images, texture_images
from ticketlens.errors import UserError

if TYPE_CHECKING:
    from ticketlens.data.prepared import PreparedData
    from ticketlens.study import ConceptOptions

log = logging.getLogger(__name__)

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


def concept_seed(name: str) -> int:
    """Stable across runs and Python versions (unlike hash()), and independent of other concepts."""
    return zlib.crc32(name.encode("utf-8"))


# ---------------------------------------------------------------------------------------- set files


def make_random_sets(data_path: Path, n: int, size: int, seed: int, outs: list[Path]) -> None:
    """R disjoint random sets of train images (seeded, independent of every concept)."""
    import numpy as np

    from ticketlens.data.prepared import TRAIN, load_prepared
    from ticketlens.fileio import atomic_save

    if len(outs) != n:
        raise UserError(f"random-sets: --n {n} but {len(outs)} output files given")
    data = load_prepared(Path(data_path))
    train = data.indices(TRAIN).numpy()
    if n * size > len(train):
        raise UserError(
            f"{data_path}: {n} random sets of {size} images need {n * size} train images, it has {len(train)} "
            "(lower explanations.tcav.set_size or n_random_sets)"
        )
    order = np.random.default_rng(seed).permutation(train)
    for i, out in enumerate(outs):
        chosen = np.sort(order[i * size : (i + 1) * size])
        atomic_save(
            _set_dict(f"random_{i}", data.images[chosen], chosen, f"train images, seed {seed}"), Path(out)
        )


def _set_dict(name: str, images: Any, indices: Any, source: str) -> dict[str, Any]:
    import numpy as np
    import torch

    return {
        "name": name,
        "images": torch.as_tensor(np.asarray(images), dtype=torch.uint8).contiguous(),
        "indices": torch.as_tensor(np.asarray(indices), dtype=torch.int64),
        "source": source,
    }


def _excluded(random_paths: Iterable[Path], n: int) -> Any:
    import numpy as np

    from ticketlens.fileio import load_torch

    mask = np.zeros(n, dtype=bool)
    for path in random_paths:
        indices = load_torch(path, "random set", "run the random-sets step first")["indices"]
        mask[indices.numpy()] = True
    return mask


def make_concept_set(
    data_path: Path,
    dataset: str,
    concept: str,
    set_size: int,
    options: ConceptOptions | None,
    random_paths: list[Path],
    out: Path,
) -> None:
    """Positive example set of one concept, per docs/architecture.md (deterministic per concept).

    Strokes and textures are drawn at the dataset's image size and channels. Attribute concepts start
    from train images that show the attribute, disjoint from every random set; `options` (birds only)
    choose which images show it and what of them is kept (`attribute_concepts`).
    """
    import numpy as np

    from ticketlens.data.prepared import load_prepared
    from ticketlens.fileio import atomic_save

    data = load_prepared(Path(data_path))
    check_concept_names(dataset, [concept])
    rng = np.random.default_rng(concept_seed(concept))
    size, channels = data.image_size, data.in_channels
    if concept in STROKES:
        images = stroke_images(concept, set_size, size, channels, rng)
        atomic_save(_set_dict(concept, images, [], "procedural pen strokes"), Path(out))
    elif concept in TEXTURES:
        images = texture_images(concept.split("_", 1)[1], set_size, size, channels, rng)
        atomic_save(_set_dict(concept, images, [], "procedural textures"), Path(out))
    elif options is None:
        raise UserError(f"concept '{concept}': dataset {dataset} has no attributes (concept_options)")
    else:
        atomic_save(_attribute_set(data, concept, set_size, options, random_paths, rng), Path(out))


def _attribute_set(
    data: PreparedData,
    concept: str,
    set_size: int,
    options: ConceptOptions,
    random_paths: list[Path],
    rng: Any,
) -> dict[str, Any]:
    """The set file of an attribute concept: `set_size` qualifying train images (fewer, with a warning,
    when fewer qualify), turned into concept images as `options.images` says."""
    import numpy as np

    from ticketlens.data import attribute_concepts as attributes

    positive, rule = attributes.attribute_candidates(data, concept, options)
    positive &= ~_excluded(random_paths, len(positive))
    if options.images != "whole":
        positive &= attributes.shows_parts(data, concept, options.images)
    candidates = np.flatnonzero(positive)
    if len(candidates) < 2:
        raise UserError(
            f"concept '{concept}': only {len(candidates)} train images qualify ({rule}, outside the random "
            "sets); need at least 2 (lower concept_options.min_certainty or pick another concept)"
        )
    if len(candidates) < set_size:
        log.warning("concept %s: only %d of %d images available", concept, len(candidates), set_size)
    chosen = np.sort(rng.choice(candidates, size=min(set_size, len(candidates)), replace=False))
    images = attributes.attribute_images(data, chosen, concept, options.images, rng)
    source = (
        f"attribute {concept}: {options.images.replace('_', ' ')} of train images, {rule}, "
        f"disjoint from {len(random_paths)} random sets"
    )
    return _set_dict(concept, images, chosen, source)


def load_image_set(path: Path) -> tuple[str, Any]:
    """A concept or random set file: (name, float images in [0, 1])."""
    import torch

    from ticketlens.fileio import load_torch

    raw = load_torch(path, "image set", "run the concept set step first")
    if "images" not in raw:
        raise UserError(f"image set {path} has no 'images' entry: delete it and re-run")
    images = raw["images"]
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    name = str(raw.get("name") or Path(path).stem)
    return name, images.float()
