"""Deletion and insertion curves (Petsiuk et al. 2018) with one forward pass per image.

captum.metrics offers infidelity and sensitivity, not perturbation curves, and the maintained
implementation with curves (Quantus) is GPL, so this is a small vectorised version: pixels are
replaced in order of decreasing attribution by the per-channel training mean (the model's
normalised zero), and the curve is the softmax probability of the target class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ticketlens.device import host, model_device, to_device

TIE_SEED = 0  # one fixed tie order for every ticket, so tied pixels are removed in the same order


def pixel_ranks(attribution: np.ndarray) -> torch.Tensor:
    """Rank of every pixel (0 = most important).

    Ties (the zero region of a Grad-CAM map after its ReLU, or a whole empty map) are broken by one fixed
    random order rather than raster order, so an empty map gets the curve of random removal instead of
    one that deletes the top rows first.
    """
    flat = np.asarray(attribution, dtype=np.float64).ravel()
    tie_break = np.random.default_rng(TIE_SEED).permutation(len(flat))
    order = np.lexsort((tie_break, -flat))
    ranks = np.empty_like(order)
    ranks[order] = np.arange(len(order))
    return torch.from_numpy(ranks)


@torch.no_grad()
def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    maps: np.ndarray,
    target: torch.Tensor,
    baseline: Sequence[float],
    steps: int = 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Areas under the deletion and insertion curves per image, and the fractions used.

    Lower deletion AUC and higher insertion AUC mean a more faithful map. The curves are built in host
    memory and each image's 2 x (steps + 1) inputs go to the model's device as one batch.
    """
    device = model_device(model)
    n, channels, height, width = x.shape
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = torch.from_numpy(np.round(fractions * height * width).astype(np.int64))
    fill = (
        torch.as_tensor(list(baseline), dtype=x.dtype)
        .view(1, channels, 1, 1)
        .expand(1, channels, height, width)
    )
    deletion, insertion = np.zeros(n), np.zeros(n)
    for i in range(n):
        ranks = pixel_ranks(maps[i])
        # row s marks the pixels already moved at step s: (S, 1, H, W), broadcast over channels
        moved = (ranks[None, :] < counts[:, None]).view(-1, 1, height, width)
        image = x[i : i + 1]
        deleted = torch.where(moved, fill, image)
        inserted = torch.where(moved, image, fill)
        probs = (
            host(
                torch.softmax(model(to_device(torch.cat([deleted, inserted]), device)), dim=1)[
                    :, int(target[i])
                ]
            )
            .double()
            .numpy()
        )
        deletion[i] = np.trapezoid(probs[: steps + 1], fractions)
        insertion[i] = np.trapezoid(probs[steps + 1 :], fractions)
    return deletion, insertion, fractions
