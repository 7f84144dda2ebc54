"""TCAV concept sets: procedural strokes (MNIST), procedural textures and attribute concepts (birds).

This module must stay importable without torch for `check_concept_names` (params validation).
"""

from __future__ import annotations

import colorsys
import logging
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ticketlens.errors import UserError

if TYPE_CHECKING:
    from ticketlens.study import ConceptOptions

log = logging.getLogger(__name__)

STROKES = ("stroke_horizontal", "stroke_vertical", "stroke_diagonal", "stroke_loop")
TEXTURES = ("texture_striped", "texture_dotted", "texture_zigzag", "texture_checkered")
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


# ------------------------------------------------------------------------------ procedural patterns
# numpy only (imported lazily) so that check_concept_names stays light for params validation.


def texture_pattern(kind: str, size: int, rng: Any, period: float | None = None) -> Any:
    """A size x size float32 map in {0, 1} of one texture, at a random angle, phase and scale.

    kind: striped, dotted, checkered or zigzag (the `texture_*` concepts and the synthbirds
    background scenes share this so both are the same family of patterns).
    """
    import numpy as np

    period = float(period if period is not None else rng.uniform(size / 8, size / 4))
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    u = xx * np.cos(angle) + yy * np.sin(angle) + rng.uniform(0, period)
    v = -xx * np.sin(angle) + yy * np.cos(angle) + rng.uniform(0, period)
    if kind == "striped":
        out = (u % period) < period * rng.uniform(0.35, 0.55)
    elif kind == "dotted":
        du, dv = u % period - period / 2, v % period - period / 2
        out = np.hypot(du, dv) < period * rng.uniform(0.2, 0.32)
    elif kind == "checkered":
        out = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif kind == "zigzag":
        triangle = np.abs((u / period) % 1.0 - 0.5) * 2.0  # 0..1 saw-tooth across the stripes
        out = ((v + triangle * period * rng.uniform(0.6, 1.2)) % period) < period * 0.45
    else:
        raise UserError(
            f"unknown texture '{kind}' (allowed: {', '.join(t.split('_', 1)[1] for t in TEXTURES)})"
        )
    return out.astype(np.float32)


def concept_seed(name: str) -> int:
    """Stable across runs and Python versions (unlike hash()), and independent of other concepts."""
    return zlib.crc32(name.encode("utf-8"))


def _contrasting_colours(rng: Any, channels: int) -> tuple[Any, Any]:
    """Two random colours at least 35% apart in brightness, so the pattern, not a colour, is the
    concept."""
    import numpy as np

    v1 = rng.uniform(0.0, 1.0)
    v2 = rng.uniform(0.0, max(0.0, v1 - 0.35)) if v1 > 0.5 else rng.uniform(min(1.0, v1 + 0.35), 1.0)
    if channels == 1:
        return np.array([v1 * 255.0]), np.array([v2 * 255.0])
    hues, sats = rng.uniform(0, 1, 2), rng.uniform(0, 0.8, 2)
    return (
        np.array(colorsys.hsv_to_rgb(hues[0], sats[0], v1)) * 255.0,
        np.array(colorsys.hsv_to_rgb(hues[1], sats[1], v2)) * 255.0,
    )


def texture_images(kind: str, n: int, size: int, channels: int, rng: Any) -> Any:
    """n texture images, uint8 n x C x H x W: one pattern kind, random colours/scale/angle/phase."""
    import numpy as np

    images = np.zeros((n, channels, size, size), dtype=np.uint8)
    for i in range(n):
        pattern = texture_pattern(kind, size, rng)[None]  # 1 x H x W
        fg, bg = _contrasting_colours(rng, channels)
        image = pattern * fg[:, None, None] + (1.0 - pattern) * bg[:, None, None]
        image += rng.normal(0.0, 6.0, image.shape)  # a little sensor noise
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
    return images


def stroke_image(kind: str, size: int, rng: Any) -> Any:
    """One pen stroke, white on black like MNIST digits, at a random place, length and thickness."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    factor = 4  # draw large and downsample: smooth, anti-aliased edges like scanned pen strokes
    unit = size * factor / 28.0  # coordinates below are in MNIST's 28-pixel frame
    canvas = Image.new("L", (size * factor, size * factor), 0)
    draw = ImageDraw.Draw(canvas)
    width = int(round(rng.uniform(2.4, 4.0) * unit))
    u = lambda low, high: rng.uniform(low, high) * unit  # noqa: E731 - short local helper

    if kind == "stroke_horizontal":
        y = u(7, 21)
        draw.line([(u(3, 9), y), (u(19, 25), y + u(-1.5, 1.5))], fill=255, width=width)
    elif kind == "stroke_vertical":
        x = u(7, 21)
        draw.line([(x, u(3, 9)), (x + u(-1.5, 1.5), u(19, 25))], fill=255, width=width)
    elif kind == "stroke_diagonal":
        x0, y0, length = u(3, 9), u(3, 9), u(12, 17)
        if rng.uniform() < 0.5:  # either direction of slant
            draw.line([(x0, y0), (x0 + length, y0 + length)], fill=255, width=width)
        else:
            draw.line([(x0 + length, y0), (x0, y0 + length)], fill=255, width=width)
    elif kind == "stroke_loop":
        cx, cy, rx, ry = u(11, 17), u(11, 17), u(4, 7), u(5, 8.5)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=255, width=width)
    else:
        raise UserError(f"unknown stroke '{kind}' (allowed: {', '.join(STROKES)})")
    canvas = canvas.filter(ImageFilter.GaussianBlur(0.5 * unit))
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def stroke_images(kind: str, n: int, size: int, channels: int, rng: Any) -> Any:
    import numpy as np

    strokes = np.stack([stroke_image(kind, size, rng) for _ in range(n)])[:, None]
    return np.repeat(strokes, channels, axis=1)


# ---------------------------------------------------------------------------------------- set files

# CUB attribute group word -> the parts it describes (for part_crops); other groups use the whole image
PARTS_OF_GROUP = {
    "wing": ("left wing", "right wing"),
    "breast": ("breast",),
    "crown": ("crown",),
    "bill": ("beak",),
    "tail": ("tail",),
    "upper_tail": ("tail",),
    "under_tail": ("tail",),
    "back": ("back",),
    "belly": ("belly",),
    "throat": ("throat",),
    "eye": ("left eye", "right eye"),
    "leg": ("left leg", "right leg"),
    "forehead": ("forehead",),
    "nape": ("nape",),
    "head": ("crown", "forehead", "nape"),
    "upperparts": ("back", "nape", "crown"),
    "underparts": ("breast", "belly", "throat"),
}
PART_CROP_FRACTION = 0.5  # side of a part crop, as a fraction of the image side


def attribute_parts(attribute: str) -> tuple[str, ...]:
    """'has_wing_color::blue' -> ('left wing', 'right wing'); () when no part applies."""
    group = attribute.split("::", 1)[0].removeprefix("has_")
    for suffix in ("_color", "_pattern", "_shape", "_length"):
        group = group.removesuffix(suffix)
    return PARTS_OF_GROUP.get(group, ())


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


def _attribute_candidates(data: Any, concept: str, options: ConceptOptions) -> tuple[Any, str]:
    """Boolean mask of the train images that show an attribute, and a description of the rule."""
    import math

    import numpy as np

    from ticketlens.data.prepared import TRAIN

    names = data.extras.get("attribute_names")
    if names is None:
        raise UserError(f"unknown concept '{concept}': dataset {data.name} has no attributes")
    if concept not in names:
        prefix = concept.split("::", 1)[0] + "::"
        similar = [name for name in names if name.startswith(prefix)] or list(names[:8])
        raise UserError(
            f"unknown concept '{concept}': not an attribute of {data.name} (allowed: {', '.join(TEXTURES)} "
            f"or one of its {len(names)} attributes, e.g. {', '.join(similar[:8])})"
        )
    a = names.index(concept)
    labels = data.labels.numpy()
    train = data.split.numpy() == TRAIN
    present = data.extras["attributes"][:, a].numpy() == 1
    if not options.class_majority:
        min_certainty = options.min_certainty
        certain = data.extras["certainty"][:, a].numpy() >= min_certainty
        return train & present & certain, f"image label, certainty >= {min_certainty}"
    # CBM: an attribute belongs to a class when most of its train images show it; keep attributes
    # held by >= 10 of CUB's 200 classes, i.e. 5% of the classes (1 for a handful of classes)
    votes = np.array([present[train & (labels == c)].mean() if (train & (labels == c)).any() else 0.0
                      for c in range(data.num_classes)])  # fmt: skip
    has = votes >= 0.5
    needed = max(1, math.ceil(0.05 * data.num_classes))
    if has.sum() < needed:
        raise UserError(
            f"concept '{concept}': held by {int(has.sum())} classes by majority vote, fewer than {needed} "
            "(the CBM filter of concept_options.class_majority; turn it off or pick another attribute)"
        )
    return train & has[labels], f"class-level majority vote ({int(has.sum())} classes)"


def _part_crops(data: Any, chosen: Any, concept: str) -> Any:
    """Square crops around the parts an attribute describes, resized back to the image size."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    parts = [
        data.extras["part_names"].index(p) for p in attribute_parts(concept) if p in data.extras["part_names"]
    ]
    size = data.image_size
    side = max(8, int(round(PART_CROP_FRACTION * size)))
    crops = []
    for index in chosen:
        locs = data.extras["part_locs"][index, parts].numpy()
        visible = locs[locs[:, 2] > 0]
        cx, cy = visible[:, :2].mean(axis=0)
        x0 = int(np.clip(round(cx - side / 2), 0, size - side))
        y0 = int(np.clip(round(cy - side / 2), 0, size - side))
        crop = data.images[index, :, y0 : y0 + side, x0 : x0 + side].float()[None]
        crops.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0])
    return torch.stack(crops).round().clamp(0, 255).to(torch.uint8)


def _has_visible_parts(data: Any, concept: str) -> Any:
    parts = [
        data.extras["part_names"].index(p) for p in attribute_parts(concept) if p in data.extras["part_names"]
    ]
    if not parts:
        raise UserError(
            f"concept '{concept}': part_crops needs an attribute of a bird part "
            f"(wing, breast, crown, bill, tail, ...), this one describes the whole bird"
        )
    return (data.extras["part_locs"][:, parts, 2] > 0).any(dim=1).numpy()


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

    Attribute concepts take train images, disjoint from every random set; strokes and textures are
    drawn at the dataset's image size and channels. `options` (birds only) choose which images show an
    attribute.
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
        return
    if concept in TEXTURES:
        images = texture_images(concept.split("_", 1)[1], set_size, size, channels, rng)
        atomic_save(_set_dict(concept, images, [], "procedural textures"), Path(out))
        return
    if options is None:
        raise UserError(f"concept '{concept}': dataset {dataset} has no attributes (concept_options)")
    positive, rule = _attribute_candidates(data, concept, options)
    positive &= ~_excluded(random_paths, len(positive))
    crops = options.part_crops
    if crops:
        positive &= _has_visible_parts(data, concept)
    candidates = np.flatnonzero(positive)
    if len(candidates) < 2:
        raise UserError(
            f"concept '{concept}': only {len(candidates)} train images qualify ({rule}, outside the random "
            "sets); need at least 2 (lower concept_options.min_certainty or pick another concept)"
        )
    if len(candidates) < set_size:
        log.warning("concept %s: only %d of %d images available", concept, len(candidates), set_size)
    chosen = np.sort(rng.choice(candidates, size=min(set_size, len(candidates)), replace=False))
    images = _part_crops(data, chosen, concept) if crops else data.images[chosen]
    source = f"attribute {concept}: train images, {rule}, disjoint from {len(random_paths)} random sets"
    atomic_save(_set_dict(concept, images, chosen, source + (", part crops" if crops else "")), Path(out))


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
