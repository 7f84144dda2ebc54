"""Atomic writers and small shared helpers: a killed job must never leave a half-written target."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ticketlens.errors import UserError
from ticketlens.fileio import atomic_save as write_torch  # noqa: F401
from ticketlens.fileio import (
    atomic_write,
    load_torch,
    write_csv,  # noqa: F401  (re-exported for the explanation modules)
)


def write_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    def write(tmp: Path) -> None:
        # a file object, because np.savez appends ".npz" to names that lack it
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)


def seed_everything(seed: int) -> None:
    """Seed every generator a CAV classifier or an attribution may draw from."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(model: nn.Module) -> str:
    """Hash of the weights, so caches keyed by it can never be reused for a changed model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def get_module(model: nn.Module, dotted: str) -> nn.Module:
    try:
        return model.get_submodule(dotted)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        raise UserError(f"model has no layer '{dotted}' (layers: {', '.join(names)})") from None


def load_model(checkpoint: Path) -> nn.Module:
    """The lead's loader (eval mode, pruned weights zero); imported lazily to keep startup light."""
    from ticketlens.lottery import load_model as _load

    model = _load(Path(checkpoint))
    return model.eval()


def load_image_set(path: Path) -> tuple[str, torch.Tensor]:
    """A concept or random set file: (name, float images in [0, 1])."""
    raw = load_torch(path, "image set", "run the concepts step first")
    if "images" not in raw:
        raise UserError(f"image set {path} has no 'images' entry: delete it and re-run")
    images = raw["images"]
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    name = str(raw.get("name") or Path(path).stem)
    return name, images.float()
