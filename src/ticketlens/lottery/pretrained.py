"""ImageNet-pretrained initialisation (`training.model_init: imagenet`) for ResNet-18 and ResNet-50, offline.

The weights are torchvision's (its weights API names the file, its URL and its hash): ResNet-18
`IMAGENET1K_V1` (69.8% top-1) and ResNet-50 `IMAGENET1K_V1` (76.1%, the weights of `pretrained=True` that
published CUB fine-tuning figures use). Nothing is downloaded: the file is read from `training.weights_file`
(a file, or a folder holding torchvision's file name) or from torchvision's cache folder
`$TORCH_HOME/hub/checkpoints` (`torch.hub.get_dir()`). Its sha256 is checked against the hash torchvision
publishes in the file name (the first 8 hex digits, exactly what `torch.hub` checks) before
`torch.load(weights_only=True)`; a registry entry may pin a full sha256 instead. The output layer is then
re-initialised for the dataset's classes from the study's seed, and the model normalises with ImageNet's
mean and std (the statistics the weights were trained with).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ticketlens.errors import UserError
from ticketlens.fileio import file_sha256, load_torch

MODEL_INITS = ("scratch", "imagenet")  # the values of training.model_init
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
}
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")  # torch.hub's convention: <name>-<sha256 prefix>.pth


@dataclass(frozen=True)
class PretrainedWeights:
    """One weights file: its torchvision file name, where it is published and its (prefix of the) sha256."""

    model: str
    file_name: str
    url: str
    sha256: str


REGISTERED: dict[str, PretrainedWeights] = {}  # entries that take precedence over torchvision's (tests)


def published_weights(model: str) -> PretrainedWeights:
    """The ImageNet weights of `model` as torchvision publishes them."""
    if model in REGISTERED:
        return REGISTERED[model]
    if model not in TORCHVISION_WEIGHTS:
        raise UserError(
            f"training.model_init: imagenet has no weights for model '{model}' "
            f"(allowed: {', '.join(TORCHVISION_WEIGHTS)}; other models use scratch)"
        )
    import torchvision

    enum_name, member = TORCHVISION_WEIGHTS[model].split(".")
    url = getattr(torchvision.models, enum_name)[member].url
    file_name = url.rsplit("/", 1)[-1]
    match = _HASH_IN_NAME.search(file_name)
    if match is None:  # every torchvision ImageNet file carries it; refuse rather than skip the check
        raise UserError(f"{file_name}: torchvision publishes no hash for it, refusing to load it unverified")
    return PretrainedWeights(model, file_name, url, match[1])


def cache_folder() -> Path:
    """torchvision's cache of downloaded weights: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_path(weights: PretrainedWeights, weights_file: str | None) -> Path:
    """The file to read, or one line naming the exact file and where to put it."""
    if weights_file:
        given = Path(weights_file)
        path = given / weights.file_name if given.is_dir() else given
    else:
        path = cache_folder() / weights.file_name
    if not path.is_file():
        raise UserError(
            f"pretrained weights {path} not found: put torchvision's {weights.file_name} ({weights.url}) "
            f"in {cache_folder()} or name it in training.weights_file"
        )
    return path


def verified_state(weights: PretrainedWeights, weights_file: str | None) -> dict[str, torch.Tensor]:
    """The weights file's state dict, loaded only after its sha256 matched the published one."""
    path = weights_path(weights, weights_file)
    digest = file_sha256(path)
    if not digest.startswith(weights.sha256):
        raise UserError(
            f"pretrained weights {path}: sha256 {digest[:16]}... is not torchvision's {weights.sha256} "
            f"for {weights.file_name}: refused (download it again from {weights.url})"
        )
    state = load_torch(path, "pretrained weights")
    if not isinstance(state, dict):
        raise UserError(f"pretrained weights {path}: not a state dict")
    return state


def load_imagenet(
    model: nn.Module, name: str, output_layer: str, weights_file: str | None, seed: int
) -> None:
    """Copy torchvision's ImageNet weights into `model` (the torchvision layers live under `features.`;
    torchvision's `fc` is the dataset's own output layer) and re-initialise that layer from `seed`."""
    state = verified_state(published_weights(name), weights_file)
    mapped = {f"features.{key}": value for key, value in state.items() if not key.startswith("fc.")}
    own = model.state_dict()
    expected = {key for key in own if not key.startswith(("normalize.", f"{output_layer}."))}
    if set(mapped) != expected:
        differ = sorted(set(mapped) ^ expected)[:3]
        raise UserError(f"pretrained weights for {name} do not fit the model (keys {', '.join(differ)} ...)")
    model.load_state_dict({**own, **mapped})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.get_submodule(output_layer).reset_parameters()
