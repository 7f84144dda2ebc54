"""Seeds of the explanations: every generator a CAV fit or an attribution draws from, and fit seeds as uint64."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed every generator a CAV classifier or an attribution may draw from."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_array(seeds: torch.Tensor | Sequence[int]) -> np.ndarray:
    values = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
    return np.array([int(s) % 2**64 for s in values], dtype=np.uint64)
