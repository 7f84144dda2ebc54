"""The spatial size of each model layer's maps at an image size, by arithmetic (no torch: params
validation refuses a Grad-CAM layer too coarse to mean anything before any job runs).

A ResNet-18 at 32 px ends in a 1 x 1 map: Grad-CAM there is one number per image, uniform over the image
(box mass = box area), and comparing such maps says nothing. MIN_GRADCAM_SIDE is the coarsest map
accepted; the default layer is the deepest block that reaches it.
"""

from __future__ import annotations

import math
import re

MIN_GRADCAM_SIDE = 4  # Grad-CAM maps coarser than 4 x 4 are refused
CONV_BLOCKS = {"convnet_mnist": (1, 1), "conv4": (2, 2), "conv6": (2, 2, 2)}  # convs per block (models.py)
RESNETS = ("resnet18", "resnet50")
RESNET_BLOCKS = ("features.layer1", "features.layer2", "features.layer3", "features.layer4")


def _halve(side: int, times: int) -> int:
    for _ in range(times):
        side = math.ceil(side / 2)  # stride-2 convs and pools with padding round up (torchvision's ResNet)
    return side


def layer_side(model: str, layer: str, image_size: int) -> int | None:
    """The side of `layer`'s maps for `model` at `image_size`, None when the layer is not a known map."""
    if model in RESNETS:
        match = re.match(r"features\.(conv1|bn1|relu|maxpool|layer([1-4]))(\.|$)", layer)
        if not match:
            return None
        if match.group(1) in ("conv1", "bn1", "relu"):
            return _halve(image_size, 1)
        return _halve(image_size, 2 + max(0, int(match.group(2) or 1) - 1))
    if model in CONV_BLOCKS:
        match = re.fullmatch(r"features\.(conv|relu|pool)(\d+)", layer)
        if not match:
            return None
        kind, k = match.group(1), int(match.group(2))
        if kind == "pool":
            return image_size // 2**k if k <= len(CONV_BLOCKS[model]) else None
        ends = [sum(CONV_BLOCKS[model][: b + 1]) for b in range(len(CONV_BLOCKS[model]))]
        block = next((b for b, end in enumerate(ends) if k <= end), None)
        return None if block is None else image_size // 2**block
    return None


def default_gradcam_layer(model: str, image_size: int) -> str | None:
    """The Grad-CAM layer used when explanations.gradcam_layer is null: a conv net's last block; a ResNet's
    deepest block whose maps reach MIN_GRADCAM_SIDE (layer4 from 97 px, layer3 from 49 px, ...), layer4
    when none does (params validation then refuses it); None for a net without conv layers."""
    if model in CONV_BLOCKS:
        return f"features.relu{sum(CONV_BLOCKS[model])}"
    if model in RESNETS:
        fine = [b for b in RESNET_BLOCKS if (layer_side(model, b, image_size) or 0) >= MIN_GRADCAM_SIDE]
        return fine[-1] if fine else RESNET_BLOCKS[-1]
    return None


def smallest_image_size(model: str, layer: str, side: int = MIN_GRADCAM_SIDE) -> int:
    """The smallest image size at which `layer` gives maps of at least side x side."""
    size = side
    while (layer_side(model, layer, size) or 0) < side:
        size += 1
    return size


def coarse_gradcam_problem(model: str, layer: str | None, image_size: int) -> str | None:
    """One line naming the layer, its map size and the image size that would give enough, or None."""
    layer = layer or default_gradcam_layer(model, image_size)
    side = layer_side(model, layer, image_size) if layer else None
    if side is None or side >= MIN_GRADCAM_SIDE:
        return None
    return (
        f"Grad-CAM layer {layer} of {model} gives {side} x {side} maps at image_size {image_size}, coarser "
        f"than {MIN_GRADCAM_SIDE} x {MIN_GRADCAM_SIDE} (uniform maps that compare as equal); allowed: "
        f"image_size >= {smallest_image_size(model, layer)} for this layer, or a finer explanations.gradcam_layer"
    )
