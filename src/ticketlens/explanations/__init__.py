"""Explanations: pixel level (`explain`, `saliency`, `compare`, `faithfulness`) and concept level (`tcav`)."""

from __future__ import annotations


def seed_everything(seed: int) -> None:
    """Seed every generator a CAV classifier or an attribution may draw from."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
