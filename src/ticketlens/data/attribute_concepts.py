"""Bird attribute concepts (`has_wing_color::blue`): which train images show an attribute, and what of
each image a concept image keeps (`concept_options.images`).

A concept set must mean the attribute, not the classes it helps define. On synthbirds every image with
blue wings belongs to a blue-winged class, so a set of whole images *is* those classes' images and its
TCAV score is high by construction. Hence:

- `part_patches` (synthbirds' default): only the pixels of the attribute's parts (from the part masks),
  where they were, on a fresh bird-free scene drawn by the synthbirds generator with a uniformly random
  scene: no other part of the bird, nothing of its class but the attribute.
- `part_crops` (CUB's default): a square crop around the attribute's visible parts, resized back (the
  bird's box for the whole-bird attributes has_size, has_shape, has_primary_color).
- `whole`: the whole train image (confounded with the classes the attribute defines; an ablation).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ticketlens.data.prepared import TRAIN, PreparedData
from ticketlens.data.procedural import TEXTURES
from ticketlens.data.synthbirds.drawing import draw_scene
from ticketlens.errors import UserError

if TYPE_CHECKING:
    from ticketlens.study import ConceptOptions

IMAGE_KINDS = ("part_patches", "part_crops", "whole")  # the values of concept_options.images

# CUB attribute group word -> the parts it describes (part crops and patches)
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
# CUB groups about the whole bird (no part): their part crop is the bird's box
WHOLE_BIRD_GROUPS = ("has_size", "has_shape", "has_primary_color")


def whole_bird(attribute: str) -> bool:
    return attribute.split("::", 1)[0] in WHOLE_BIRD_GROUPS


def attribute_parts(attribute: str) -> tuple[str, ...]:
    """'has_wing_color::blue' -> ('left wing', 'right wing'); () when no part applies."""
    group = attribute.split("::", 1)[0].removeprefix("has_")
    for suffix in ("_color", "_pattern", "_shape", "_length"):
        group = group.removesuffix(suffix)
    return PARTS_OF_GROUP.get(group, ())


def attribute_index(data: PreparedData, concept: str) -> int:
    """The column of `concept` in the dataset's attribute table, or a one-line error with examples."""
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
    return names.index(concept)


def attribute_candidates(data: PreparedData, concept: str, options: ConceptOptions) -> tuple[Any, str]:
    """Boolean mask of the train images that show an attribute, and a description of the rule."""
    import numpy as np

    a = attribute_index(data, concept)
    labels = data.labels.numpy()
    train = data.split.numpy() == TRAIN
    present = data.extras["attributes"][:, a].numpy() == 1
    if not options.class_majority:
        certain = data.extras["certainty"][:, a].numpy() >= options.min_certainty
        return train & present & certain, f"image label, certainty >= {options.min_certainty}"
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


def part_columns(data: PreparedData, concept: str, kind: str) -> list[int]:
    """Indices into `part_names` of the parts an attribute describes; UserError for a whole-bird one."""
    parts = [
        data.extras["part_names"].index(p) for p in attribute_parts(concept) if p in data.extras["part_names"]
    ]
    if not parts:
        raise UserError(
            f"concept '{concept}': concept_options.images {kind} needs an attribute of a bird part "
            "(wing, breast, crown, bill, tail, ...), this one describes no part (use images: whole)"
        )
    return parts


def shows_parts(data: PreparedData, concept: str, kind: str) -> Any:
    """Boolean mask of the images in which the attribute's parts can be seen (crops: a visible part
    location; patches: at least one pixel of the part in the part mask)."""
    import numpy as np

    if kind == "part_crops" and whole_bird(concept):
        return np.ones(len(data.labels), dtype=bool)  # a whole-bird attribute: the box is its crop
    parts = part_columns(data, concept, kind)
    if kind == "part_crops":
        return (data.extras["part_locs"][:, parts, 2] > 0).any(dim=1).numpy()
    masks = _part_masks(data, concept)
    labels = np.asarray(parts) + 1  # mask label k is part k (1-based, in part_names order)
    return np.isin(masks.numpy(), labels).any(axis=(1, 2))


def _part_masks(data: PreparedData, concept: str) -> Any:
    masks = data.extras.get("part_masks")
    if masks is None:
        raise UserError(
            f"concept '{concept}': concept_options.images part_patches needs per-pixel part masks, which "
            f"{data.name} does not have (synthbirds does; use images: part_crops)"
        )
    return masks


def part_crops(data: PreparedData, chosen: Any, concept: str) -> Any:
    """Square crops around the parts an attribute describes, resized back to the image size; for a
    whole-bird attribute (has_size, has_shape, has_primary_color: no part) a square around the bird's box."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    box_crop = whole_bird(concept)
    parts = [] if box_crop else part_columns(data, concept, "part_crops")
    size = data.image_size
    side = max(8, int(round(PART_CROP_FRACTION * size)))
    crops = []
    for index in chosen:
        if box_crop:
            x, y, w, h = data.extras["boxes"][index].tolist()
            side = int(np.clip(round(max(w, h)), min(8, size), size))
            cx, cy = x + w / 2, y + h / 2
        else:
            locs = data.extras["part_locs"][index, parts].numpy()
            visible = locs[locs[:, 2] > 0]
            cx, cy = visible[:, :2].mean(axis=0)
        x0 = int(np.clip(round(cx - side / 2), 0, size - side))
        y0 = int(np.clip(round(cy - side / 2), 0, size - side))
        crop = data.images[index, :, y0 : y0 + side, x0 : x0 + side].float()[None]
        crops.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0])
    return torch.stack(crops).round().clamp(0, 255).to(torch.uint8)


def part_patches(data: PreparedData, chosen: Any, concept: str, rng: Any) -> Any:
    """The pixels of the attribute's parts, in place, on a fresh bird-free synthbirds scene each.

    The scene is drawn uniformly from all of the dataset's scenes (one per class), so the background
    says nothing about a class even when the training split has a background shortcut.
    """
    import numpy as np
    import torch
    from PIL import Image

    if data.in_channels != 3:
        raise UserError(
            f"concept '{concept}': part_patches draws RGB scenes, {data.name} has {data.in_channels} channels"
        )
    labels = np.asarray(part_columns(data, concept, "part_patches")) + 1
    masks = _part_masks(data, concept)
    size, n_scenes = data.image_size, data.num_classes
    patches = []
    for index in chosen:
        scene = draw_scene(int(rng.integers(n_scenes)), n_scenes, size, rng)
        background = np.asarray(scene.resize((size, size), Image.Resampling.BOX)).transpose(2, 0, 1)
        keep = np.isin(masks[index].numpy(), labels)[None]
        patches.append(np.where(keep, data.images[index].numpy(), background))
    return torch.from_numpy(np.stack(patches).astype(np.uint8))


def attribute_images(data: PreparedData, chosen: Any, concept: str, kind: str, rng: Any) -> Any:
    """The concept images of the chosen source images, per `concept_options.images`."""
    if kind == "part_patches":
        return part_patches(data, chosen, concept, rng)
    if kind == "part_crops":
        return part_crops(data, chosen, concept)
    return data.images[chosen]
