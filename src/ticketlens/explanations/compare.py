"""Similarity of two sets of standard saliency maps (Adebayo et al. 2018): rank correlation, top-k overlap,
SSIM.

Every metric has a value for every pair, also where a map is constant (a Grad-CAM map with no positive cell
is all zero after its ReLU), so no image is silently dropped from a mean:

- `spearman`: the rank correlation; 0 when exactly one map is constant (its ranks say nothing, which is
  what an unrelated map scores on average) and 1 when both are (identical, all-tied rankings).
- `iou_top10` / `iou_top20`: IoU of the top-k% pixels among those with non-zero attribution; a constant map
  has no pixel that stands out, so its top set is empty; two empty sets agree (1), one empty set gives 0.
- `ssim`: SSIM of the maps scaled to [0, 1] by their own maximum; defined for constant maps as it stands.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ticketlens.errors import UserError
from ticketlens.fileio import load_npz
from ticketlens.study import METHOD_NAMES, SIMILARITY_METRICS

METRICS = tuple(SIMILARITY_METRICS)


def _flat(maps: np.ndarray) -> np.ndarray:
    return np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)


def constant_rows(maps: np.ndarray) -> np.ndarray:
    flat = _flat(maps)
    return np.ptp(flat, axis=1) == 0 if flat.shape[1] else np.ones(len(flat), dtype=bool)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation per image (ties get average ranks); constant maps as in the module docstring."""
    from scipy.stats import rankdata

    ra = rankdata(_flat(a), axis=1)
    rb = rankdata(_flat(b), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    rho = (ra * rb).sum(axis=1) / np.where(denom > 0, denom, 1.0)
    both_constant = constant_rows(a) & constant_rows(b)
    return np.where(denom > 0, rho, np.where(both_constant, 1.0, 0.0))


def top_mask(maps: np.ndarray, fraction: float) -> np.ndarray:
    """The top `fraction` of pixels by absolute value (k pixels; stable on ties), leaving out pixels with
    zero attribution; empty for a constant map."""
    flat = np.abs(_flat(maps))
    k = max(1, round(fraction * flat.shape[1]))
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    mask = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    mask &= flat > 0
    mask[constant_rows(maps)] = False
    return mask


def topk_iou(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    ma, mb = top_mask(a, fraction), top_mask(b, fraction)
    union = (ma | mb).sum(axis=1)
    return np.where(union > 0, (ma & mb).sum(axis=1) / np.where(union > 0, union, 1), 1.0)


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
    """All similarity metrics per image pair; a and b are N x H x W standard maps of the same probe set."""
    if a.shape != b.shape:
        raise ValueError(f"map shapes differ: {a.shape} vs {b.shape}")
    scores = {
        "spearman": spearman_rows(a, b),
        "iou_top10": topk_iou(a, b, 0.10),
        "iou_top20": topk_iou(a, b, 0.20),
        "ssim": ssim_rows(a, b),
    }
    return pd.DataFrame({name: scores[name] for name in METRICS})


def dense_seed_consistency(maps_by_seed: dict[int, dict[str, np.ndarray]]) -> pd.DataFrame:
    """The ceiling of consistency: every dense net compared with every other seed's dense net.

    `maps_by_seed[seed]` holds that seed's standard maps and their `probe` indices; the probe images must
    be the same for every seed (they depend only on the data), else the comparison would mix images.
    Returns one row per unordered seed pair x method with each metric's mean over probe images (every
    metric is symmetric in its two maps).
    """
    seeds = sorted(maps_by_seed)
    rows = []
    for i, seed in enumerate(seeds):
        for other in seeds[i + 1 :]:
            a, b = maps_by_seed[seed], maps_by_seed[other]
            if not np.array_equal(a["probe"], b["probe"]):
                raise ValueError(f"the dense nets of seeds {seed} and {other} explain different probe images")
            for method in (m for m in a if m != "probe" and m in b):
                means = compare_maps(a[method], b[method]).mean()
                rows.append({"seed": seed, "other_seed": other, "method": method, **means.to_dict()})
    return pd.DataFrame(rows, columns=["seed", "other_seed", "method", *METRICS])


def load_standard_maps(path: Path, probe: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The standard maps of a saliency.npz (and its `probe` indices), refusing maps of other probe images."""
    if not Path(path).exists():
        raise UserError(f"reference maps {path} not found (explain that ticket first)")
    ref = load_npz(path, "reference maps")
    if probe is not None and ("probe" not in ref or not np.array_equal(ref["probe"], probe)):
        raise UserError(f"{path} explains other probe images: re-run it with the same explanations params")
    return {m: ref[m] for m in (*METHOD_NAMES, "probe") if m in ref}
