"""Models by name. Every model takes float images in [0, 1] and normalises internally, and names
its Grad-CAM layer, its TCAV layers and its output layer so the other stages need no per-model code."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ticketlens.device import SHAPES_ONLY
from ticketlens.errors import UserError
from ticketlens.lottery.feature_maps import default_gradcam_layer

MODELS = ("lenet300", "convnet_mnist", "conv4", "conv6", "resnet18", "resnet50")


class Normalize(nn.Module):
    """Per-channel standardisation kept inside the model, so attributions are in pixel space."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TicketNet(nn.Module):
    """normalize -> features -> classifier, with the layer names other stages need."""

    gradcam_layer: str | None
    tcav_layers: list[str]
    output_layer: str

    def __init__(
        self,
        normalize: Normalize,
        features: nn.Sequential,
        classifier: nn.Sequential,
        gradcam_layer: str | None,
        tcav_layers: list[str],
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.features = features
        self.classifier = classifier
        self.gradcam_layer = gradcam_layer
        self.tcav_layers = tcav_layers
        last = [name for name, m in classifier.named_children() if isinstance(m, nn.Linear)][-1]
        self.output_layer = f"classifier.{last}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


def _fc_stack(sizes: Sequence[int], num_classes: int) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        layers[f"fc{i}"] = nn.Linear(n_in, n_out)
        layers[f"relu{i}"] = nn.ReLU()
    layers["out"] = nn.Linear(sizes[-1], num_classes)
    return nn.Sequential(layers)


def _conv_stack(in_channels: int, blocks: Sequence[Sequence[int]]) -> tuple[nn.Sequential, list[str]]:
    """Blocks of 3x3 conv+ReLU followed by 2x2 max-pool; returns the stack and each block's output name."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    block_outputs = []
    channels, k = in_channels, 0
    for b, widths in enumerate(blocks, start=1):
        for width in widths:
            k += 1
            layers[f"conv{k}"] = nn.Conv2d(channels, width, kernel_size=3, padding=1)
            layers[f"relu{k}"] = nn.ReLU()  # not in-place: captum hooks need the tensor intact
            channels = width
        block_outputs.append(f"features.relu{k}")
        layers[f"pool{b}"] = nn.MaxPool2d(2)
    return nn.Sequential(layers), block_outputs


def _conv_net(
    blocks: Sequence[Sequence[int]],
    fc: Sequence[int],
    num_classes: int,
    in_channels: int,
    image_size: int,
    normalize: Normalize,
) -> TicketNet:
    if image_size % (2 ** len(blocks)):
        raise UserError(f"image_size {image_size} must be divisible by {2 ** len(blocks)} for this conv net")
    features, block_outputs = _conv_stack(in_channels, blocks)
    flat = blocks[-1][-1] * (image_size // 2 ** len(blocks)) ** 2
    classifier = _fc_stack([flat, *fc], num_classes)
    middle = block_outputs[len(block_outputs) // 2 - 1] if len(block_outputs) > 1 else block_outputs[0]
    return TicketNet(normalize, features, classifier, block_outputs[-1], [middle, block_outputs[-1]])


class ResNet(TicketNet):
    """torchvision's ResNet-18 or ResNet-50 with the TicketNet interface (features = stem + layer1..4;
    torchvision's layer names under `features.`, its `fc` as `classifier.out`)."""

    def __init__(self, arch: str, num_classes: int, normalize: Normalize, image_size: int) -> None:
        # Imported here: torchvision pulls in torch._dynamo (~2.5 s), a cost every other job would pay.
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        features = nn.Sequential(
            OrderedDict(
                (name, getattr(net, name))
                for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
            )
        )
        classifier = nn.Sequential(OrderedDict(pool=net.avgpool, flatten=nn.Flatten(), out=net.fc))
        # Grad-CAM: the deepest block whose maps reach feature_maps.MIN_GRADCAM_SIDE at this image size
        gradcam = default_gradcam_layer(arch, image_size)
        super().__init__(normalize, features, classifier, gradcam, ["features.layer3", "features.layer4"])


INITS = ("default", "glorot_normal")  # the values of datasets.<name>.training.init


def glorot_normal_(model: nn.Module) -> None:
    """Gaussian Glorot (`xavier_normal_`) for every conv and linear weight, zero biases: the init of
    Frankle & Carbin 2019. Draws from torch's global generator, so seed it first."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def build_model(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    width: float = 1.0,
    init: str = "default",
) -> TicketNet:
    """Build a freshly initialised model; seed torch before calling for a reproducible init.

    init "default": each architecture's own init (PyTorch's layer defaults; lenet300 Gaussian Glorot,
    as the paper that defines it); "glorot_normal": Gaussian Glorot for every architecture.
    """
    if init not in INITS:
        raise UserError(f"unknown init '{init}' (allowed: {', '.join(INITS)})")
    model = _architecture(name, num_classes, in_channels, image_size, Normalize(mean, std), width)
    if init == "glorot_normal" or name == "lenet300":
        glorot_normal_(model)
    return model


def _architecture(
    name: str, num_classes: int, in_channels: int, image_size: int, normalize: Normalize, width: float
) -> TicketNet:
    """The model `name` with PyTorch's default layer init."""

    def w(channels: int) -> int:
        return max(1, round(channels * width))

    if name == "lenet300":
        features = nn.Sequential()
        classifier = _fc_stack([in_channels * image_size**2, w(300), w(100)], num_classes)
        return TicketNet(normalize, features, classifier, None, ["classifier.relu1", "classifier.relu2"])
    if name == "convnet_mnist":
        return _conv_net([[w(16)], [w(32)]], [w(128)], num_classes, in_channels, image_size, normalize)
    if name == "conv4":
        return _conv_net(
            [[w(64)] * 2, [w(128)] * 2], [w(256)] * 2, num_classes, in_channels, image_size, normalize
        )
    if name == "conv6":
        blocks = [[w(64)] * 2, [w(128)] * 2, [w(256)] * 2]
        return _conv_net(blocks, [w(256)] * 2, num_classes, in_channels, image_size, normalize)
    if name in ("resnet18", "resnet50"):
        if in_channels != 3:
            raise UserError(f"{name} needs 3 input channels, got {in_channels}")
        return ResNet(name, num_classes, normalize, image_size)
    raise UserError(f"unknown model '{name}' (allowed: {', '.join(MODELS)})")


@dataclass(frozen=True)
class LayerNames:
    """The dotted layer names of an architecture, by what params may name them for."""

    modules: tuple[str, ...]  # every layer: explanations.tcav.layers
    spatial: tuple[str, ...]  # the convolutional features: explanations.gradcam_layer
    prunable: tuple[str, ...]  # conv and linear layers: pruning.exclude


def layer_names(name: str) -> LayerNames:
    """The layer names of model `name`. They depend on the architecture only (not on width, classes,
    channels or image size), so it is built once on the meta device: no memory, no init, milliseconds."""
    with SHAPES_ONLY:
        model = _architecture(name, 2, 3, 64, Normalize([0.0] * 3, [1.0] * 3), 1.0)
    modules = tuple(n for n, _ in model.named_modules() if n)
    return LayerNames(
        modules=modules,
        spatial=tuple(n for n in modules if n.startswith("features.")),
        prunable=tuple(prunable_layers(model)),
    )


def prunable_layers(model: nn.Module, exclude: Sequence[str] = ()) -> dict[str, nn.Module]:
    """Conv and linear layers by dotted name; biases and norm layers are never pruned."""
    unknown = set(exclude) - {name for name, _ in model.named_modules()}
    if unknown:
        raise UserError(f"pruning.exclude names unknown layers: {', '.join(sorted(unknown))}")
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear) and name not in exclude
    }


def get_module(model: nn.Module, dotted: str) -> nn.Module:
    """The layer named `dotted` (e.g. "features.3"), or a one-line error listing the model's layers."""
    try:
        return model.get_submodule(dotted)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        raise UserError(f"model has no layer '{dotted}' (layers: {', '.join(names)})") from None
