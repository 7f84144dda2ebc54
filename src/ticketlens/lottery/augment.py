"""Training augmentation for bird images (`training.augment`): random resized crop and horizontal flip.

Applied to a uint8 batch already on the training device, in one batched resampling (`affine_grid` +
bilinear `grid_sample`, the crop scaled back to the full image size). The crop boxes and flips are drawn
on the CPU from a generator seeded by (seed, iteration) alone, so a resumed run and a re-run draw the same
boxes for the same step, whatever the device. The boxes follow torchvision's `RandomResizedCrop`
(area scale 0.08-1, aspect ratio 3/4-4/3, ten tries, then the whole image).
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "crop_flip")  # the values of training.augment
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
TRIES = 10


def augment_generator(seed: int, iteration: int) -> torch.Generator:
    """The CPU generator of one training step's augmentation: a function of (seed, iteration) only."""
    digest = hashlib.sha256(f"ticketlens augment {int(seed)} {int(iteration)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def crop_boxes(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """n crop boxes (top, left, h, w) in pixels, float64, drawn as torchvision's RandomResizedCrop does."""
    area = height * width
    scale = SCALE[0] + (SCALE[1] - SCALE[0]) * torch.rand(n, TRIES, generator=generator, dtype=torch.float64)
    log_ratio = math.log(RATIO[0]) + (math.log(RATIO[1]) - math.log(RATIO[0])) * torch.rand(
        n, TRIES, generator=generator, dtype=torch.float64
    )
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * scale * aspect))
    h = torch.round(torch.sqrt(area * scale / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(valid.any(1), valid.float().argmax(1), -1)
    pick = first.clamp(min=0)[:, None]
    h = torch.where(first >= 0, h.gather(1, pick)[:, 0], float(height))
    w = torch.where(first >= 0, w.gather(1, pick)[:, 0], float(width))
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.floor(u[:, 0] * (height - h + 1))
    left = torch.floor(u[:, 1] * (width - w + 1))
    return torch.stack([top, left, h, w], dim=1)


def crop_flip_thetas(boxes: torch.Tensor, flips: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The affine maps (N x 2 x 3, for `affine_grid` with align_corners=False) of crops and flips."""
    top, left, h, w = boxes.unbind(1)
    theta = torch.zeros(len(boxes), 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = (w / width) * torch.where(flips, -1.0, 1.0).double()
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    return theta.float()


def crop_flip(images: torch.Tensor, seed: int, iteration: int) -> torch.Tensor:
    """A uint8 batch (N x C x H x W, on any device) -> augmented float images in [0, 1] on that device."""
    n, channels, height, width = images.shape
    generator = augment_generator(seed, iteration)
    boxes = crop_boxes(n, height, width, generator)
    flips = torch.rand(n, generator=generator) < 0.5
    theta = crop_flip_thetas(boxes, flips, height, width).to(images.device)
    grid = F.affine_grid(theta, [n, channels, height, width], align_corners=False)
    x = images.float().div_(255.0)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
