"""TCAV concept and random sets: the set files the `make_random_sets` and `make_concept_set` rules write.

Strokes and textures come from `procedural`, bird attribute concepts from `attribute_concepts`; which
names a dataset accepts is `concept_names` (params validation, without torch or numpy).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ticketlens.data import attribute_concepts as attributes
from ticketlens.data.concept_names import check_concept_names
from ticketlens.data.prepared import TRAIN, PreparedData, load_prepared
from ticketlens.data.procedural import STROKES, TEXTURES, stroke_images, texture_images
from ticketlens.errors import UserError
from ticketlens.fileio import atomic_save, load_torch

if TYPE_CHECKING:
    from ticketlens.study import ConceptOptions

log = logging.getLogger(__name__)


def concept_seed(name: str) -> int:
    """Stable across runs and Python versions (unlike hash()), and independent of other concepts."""
    return zlib.crc32(name.encode("utf-8"))


# ---------------------------------------------------------------------------------------- set files


def make_random_sets(
    data_path: Path, n: int, n_calibration: int, size: int, seed: int, out: Path, calibration_out: Path
) -> None:
    """R disjoint random sets of train images (seeded, independent of every concept) in `out`, and
    `n_calibration` more, drawn after them and never in the TCAV pool, in `calibration_out`.

    One file per role rather than per set: a CUB-sized study has ~24k TCAV jobs, and 20 inputs each made
    Snakemake's DAG the slowest part of a dry run (docs/benchmarks.md)."""
    import numpy as np

    data = load_prepared(Path(data_path))
    train = data.indices(TRAIN).numpy()
    total = n + n_calibration
    if total * size > len(train):
        raise UserError(
            f"{data_path}: {total} random sets of {size} images need {total * size} train images, it has "
            f"{len(train)} (lower explanations.tcav.set_size, n_random_sets or n_calibration_sets)"
        )
    order = np.random.default_rng(seed).permutation(train)
    sets = []
    for i in range(total):
        chosen = np.sort(order[i * size : (i + 1) * size])
        sets.append(_set_dict(f"random_{i}", data.images[chosen], chosen, f"train images, seed {seed}"))
    atomic_save({"sets": sets[:n]}, Path(out))
    atomic_save({"sets": sets[n:]}, Path(calibration_out))


def _set_dict(name: str, images: Any, indices: Any, source: str) -> dict[str, Any]:
    import numpy as np
    import torch

    return {
        "name": name,
        "images": torch.as_tensor(np.asarray(images), dtype=torch.uint8).contiguous(),
        "indices": torch.as_tensor(np.asarray(indices), dtype=torch.int64),
        "source": source,
    }


def _excluded(random_paths: Iterable[Path], n: int) -> tuple[Any, int]:
    """Which of the n images are in a random set (of the random-set files given), and how many sets."""
    import numpy as np

    mask = np.zeros(n, dtype=bool)
    sets = [entry for path in random_paths for entry in _load_sets(Path(path))]
    for entry in sets:
        mask[entry["indices"].numpy()] = True
    return mask, len(sets)


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

    positive, rule = attributes.attribute_candidates(data, concept, options)
    in_random_sets, n_random_sets = _excluded(random_paths, len(positive))
    positive &= ~in_random_sets
    if options.images != "whole":
        positive &= attributes.shows_parts(data, concept, options.images)
    candidates = np.flatnonzero(positive)
    if len(candidates) < 2:
        raise UserError(
            f"concept '{concept}': only {len(candidates)} train images qualify ({rule}, outside the random "
            "sets); need at least 2 (lower concept_options.min_certainty or pick another concept)"
        )
    if len(candidates) < set_size:
        log.warning(
            "concept %s: only %d train images qualify (%s, outside the random sets), fewer than set_size %d: "
            "its set holds %d (`ticketlens data check --set-size` counts them for every concept)",
            concept, len(candidates), rule, set_size, len(candidates),
        )  # fmt: skip
    chosen = np.sort(rng.choice(candidates, size=min(set_size, len(candidates)), replace=False))
    images = attributes.attribute_images(data, chosen, concept, options.images, rng)
    source = (
        f"attribute {concept}: {options.images.replace('_', ' ')} of train images, {rule}, "
        f"disjoint from {n_random_sets} random sets"
    )
    return _set_dict(concept, images, chosen, source)


def _images(raw: dict[str, Any], path: Path) -> Any:
    import torch

    if "images" not in raw:
        raise UserError(f"image set {path} has no 'images' entry: delete it and re-run")
    images = raw["images"]
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    return images.float()


def load_image_set(path: Path) -> tuple[str, Any]:
    """A concept set file: (name, float images in [0, 1])."""
    raw = load_torch(path, "image set", "run the concept set step first")
    return str(raw.get("name") or Path(path).stem), _images(raw, path)


def _load_sets(path: Path) -> list[dict[str, Any]]:
    """The per-set entries of a random-sets file (name, images, indices, source), checked to be dicts."""
    raw = load_torch(path, "random sets", "run the random-sets step first")
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("sets"), list)
        or not all(isinstance(entry, dict) for entry in raw["sets"])
    ):
        raise UserError(f"random sets file {path} has no 'sets' list: delete it and re-run")
    return raw["sets"]


def load_image_sets(path: Path) -> list[tuple[str, Any]]:
    """A random-sets file: [(name, float images in [0, 1])] in drawing order."""
    return [(str(entry.get("name")), _images(entry, path)) for entry in _load_sets(Path(path))]
