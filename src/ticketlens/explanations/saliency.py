"""Pixel-level explanations: captum Grad-CAM and gradient saliency on a fixed probe set, localisation."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ticketlens.data.prepared import TEST
from ticketlens.lottery.models import get_module
from ticketlens.study import METHOD_NAMES


def stratified_indices(labels: np.ndarray, split: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """`per_class` test images per class, drawn with a per-class seed: the same for every ticket.

    Depends only on the data (never on a model), so every round, branch and seed explains the same images.
    """
    labels = np.asarray(labels)
    test = np.flatnonzero(np.asarray(split) == TEST)
    chosen = []
    for k in np.unique(labels[test]):
        members = test[labels[test] == k]
        rng = np.random.default_rng([seed, int(k)])
        chosen.append(np.sort(rng.permutation(members)[:per_class]))
    return np.concatenate(chosen).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([model(x[s]) for s in _batches(len(x), batch_size)]) if len(x) else torch.zeros(0)


def gradcam_maps(
    model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor, batch_size: int = 128
) -> np.ndarray:
    """Standard Grad-CAM (ReLU at the layer's resolution, then upsampled): N x H x W, raw magnitudes."""
    return gradcam_standard_and_signed(model, layer, x, target, batch_size)[0]


def gradcam_standard_and_signed(
    model: nn.Module, layer: str, x: torch.Tensor, target: torch.Tensor, batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """(standard, signed) Grad-CAM, both upsampled bilinearly to the input size: N x H x W, raw magnitudes.

    Standard Grad-CAM (Selvaraju et al. 2017; pytorch-grad-cam) applies the ReLU to the weighted activation
    map at the layer's resolution and then upsamples. Upsampling first would blend negative cells into
    their positive neighbours, and skipping the ReLU (captum's default) leaves maps whose negative evidence
    the metrics would have to interpret. The signed map (no ReLU) is returned for analysis only.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    explainer = LayerGradCam(model, get_module(model, layer))
    size = tuple(x.shape[-2:])
    standard, signed = [], []
    for s in _batches(len(x), batch_size):
        raw = explainer.attribute(x[s], target=target[s], relu_attributions=False).detach()
        for out, cam in ((standard, torch.relu(raw)), (signed, raw)):
            out.append(LayerAttribution.interpolate(cam, size, interpolate_mode="bilinear")[:, 0])
    return (
        torch.cat(standard).numpy().astype(np.float32),
        torch.cat(signed).numpy().astype(np.float32),
    )


def gradient_maps(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, batch_size: int = 128
) -> np.ndarray:
    """Simonyan et al. saliency via captum: |d logit / d pixel|, max over channels. N x H x W."""
    from captum.attr import Saliency

    explainer = Saliency(model)
    parts = []
    for s in _batches(len(x), batch_size):
        inputs = x[s].clone().requires_grad_(True)  # captum would warn and set it itself
        grads = explainer.attribute(inputs, target=target[s], abs=True)
        parts.append(grads.amax(dim=1).detach())
    return torch.cat(parts).numpy().astype(np.float32)


def explain_probe(model: nn.Module, x: torch.Tensor, target: torch.Tensor, gradcam_layer: str | None) -> dict:
    """Every pixel-level method that applies to the model (gradcam needs a conv layer, saliency always),
    as standard maps; `gradcam_signed` is Grad-CAM without its ReLU, kept for analysis, never compared."""
    maps = {}
    if gradcam_layer:
        maps["gradcam"], maps["gradcam_signed"] = gradcam_standard_and_signed(model, gradcam_layer, x, target)
    maps["saliency"] = gradient_maps(model, x, target)
    return maps


def standard_maps(maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The maps every metric is computed on: the methods of `study.METHOD_NAMES`, not the signed map."""
    return {method: m for method, m in maps.items() if method in METHOD_NAMES}


def empty_maps(maps: np.ndarray) -> np.ndarray:
    """True where a map has no positive cell (a Grad-CAM map whose every cell the ReLU set to zero)."""
    flat = np.asarray(maps).reshape(len(maps), -1)
    return ~(flat > 0).any(axis=1)


def randomized_copy(model: nn.Module, seed: int) -> nn.Module:
    """Full weight randomisation (Adebayo et al. 2018) of a copy, keeping the ticket's zero pattern.

    Every module with `reset_parameters` (conv, linear, batch norm) is re-initialised from a seeded
    generator; weights that are pruned in the ticket stay zero, so the floor has the ticket's sparsity.
    """
    clone = copy.deepcopy(model).eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in clone.modules():
            if not hasattr(module, "reset_parameters"):
                continue
            weight = getattr(module, "weight", None)
            pruned = (weight == 0) if isinstance(weight, torch.Tensor) and weight.dim() > 1 else None
            module.reset_parameters()
            if pruned is not None:
                module.weight[pruned] = 0.0
    return clone


def box_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centres lie in each (x, y, w, h) box: N x H x W bool."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    in_x = (cols[None, :] >= boxes[:, 0:1]) & (cols[None, :] <= boxes[:, 0:1] + boxes[:, 2:3])
    in_y = (rows[None, :] >= boxes[:, 1:2]) & (rows[None, :] <= boxes[:, 1:2] + boxes[:, 3:4])
    return in_y[:, :, None] & in_x[:, None, :]


def part_masks_for(
    part_masks: np.ndarray, labels: np.ndarray, defining_parts: dict, height: int, width: int
) -> np.ndarray:
    """Class-defining part pixels per image: N x H x W bool (resized by nearest neighbour if needed)."""
    masks = np.zeros((len(labels), height, width), dtype=bool)
    for i, (label_map, label) in enumerate(zip(part_masks, labels, strict=True)):
        parts = [int(p) for p in defining_parts.get(int(label), defining_parts.get(str(int(label)), []))]
        masks[i] = np.isin(_resize_nearest(np.asarray(label_map), height, width), parts)
    return masks


def _resize_nearest(label_map: np.ndarray, height: int, width: int) -> np.ndarray:
    if label_map.shape == (height, width):
        return label_map
    resized = F.interpolate(
        torch.from_numpy(label_map)[None, None].float(), size=(height, width), mode="nearest"
    )
    return resized[0, 0].numpy().astype(label_map.dtype)


def mass_share(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of the positive attribution mass inside the mask.

    A map with no positive mass (empty after Grad-CAM's ReLU) is the limit of a constant map, which spreads
    its mass evenly: its share is the mask's area share (chance level), never a silently dropped NaN.
    """
    positive = np.clip(np.asarray(maps, dtype=np.float64), 0, None).reshape(len(maps), -1)
    inside = (positive * masks.reshape(len(masks), -1)).sum(axis=1)
    total = positive.sum(axis=1)
    share = inside / np.where(total > 0, total, 1.0)
    return np.where(total > 0, share, area_share(masks))


def pointing_hit(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Pointing game: 1.0 where the map's maximum lies in the mask.

    Ties for the maximum are broken uniformly at random, in expectation: the hit is the share of maximal
    pixels inside the mask, so a constant (or empty) map scores the mask's area share, not whatever pixel
    raster order puts first.
    """
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    peaks = flat == flat.max(axis=1, keepdims=True)
    inside = (peaks & masks.reshape(len(masks), -1)).sum(axis=1)
    return inside / peaks.sum(axis=1)


def area_share(masks: np.ndarray) -> np.ndarray:
    """Mask area as a share of the image: the expected mass share of a map that ignores the image."""
    return masks.reshape(len(masks), -1).mean(axis=1).astype(np.float64)
