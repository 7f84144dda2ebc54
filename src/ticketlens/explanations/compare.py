"""Similarity of two sets of saliency maps (Adebayo et al. 2018): rank correlation, top-k overlap, SSIM."""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("spearman_abs", "spearman_signed", "iou_top10", "iou_top20", "ssim")


def _flat(maps: np.ndarray) -> np.ndarray:
    return np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation per image (ties get average ranks); NaN where a map is constant."""
    from scipy.stats import rankdata

    ra = rankdata(_flat(a), axis=1)
    rb = rankdata(_flat(b), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)


def top_mask(maps: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the top `fraction` pixels by absolute value (exactly k pixels; stable on ties)."""
    flat = np.abs(_flat(maps))
    k = max(1, round(fraction * flat.shape[1]))
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    mask = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def topk_iou(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    ma, mb = top_mask(a, fraction), top_mask(b, fraction)
    return (ma & mb).sum(axis=1) / (ma | mb).sum(axis=1)


def _unit(image: np.ndarray) -> np.ndarray:
    # SSIM on |map| scaled to [0, 1] by its own maximum, as in the sanity-check paper: raw scales differ
    # across rounds and would dominate the score.
    magnitude = np.abs(image)
    peak = magnitude.max()
    return magnitude / peak if peak > 0 else magnitude


def ssim_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    side = min(a.shape[-2:])
    window = min(7, side if side % 2 else side - 1)
    return np.array(
        [
            structural_similarity(_unit(x), _unit(y), data_range=1.0, win_size=window)
            for x, y in zip(a, b, strict=True)
        ]
    )


def compare_maps(a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    """All similarity metrics per image pair; a and b are N x H x W raw maps of the same probe set."""
    if a.shape != b.shape:
        raise ValueError(f"map shapes differ: {a.shape} vs {b.shape}")
    return pd.DataFrame(
        {
            "spearman_abs": spearman_rows(np.abs(a), np.abs(b)),
            "spearman_signed": spearman_rows(a, b),
            "iou_top10": topk_iou(a, b, 0.10),
            "iou_top20": topk_iou(a, b, 0.20),
            "ssim": ssim_rows(a, b),
        }
    )
