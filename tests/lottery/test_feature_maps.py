"""Grad-CAM resolution: the arithmetic matches the built models, coarse layers are refused before any job."""

from __future__ import annotations

import pytest
import torch

from helpers import SCHEMA, UNIT_PARAMS, merged
from ticketlens.config import ConfigError, validate_params
from ticketlens.lottery.feature_maps import coarse_gradcam_problem, default_gradcam_layer, layer_side
from ticketlens.lottery.models import build_model


@pytest.mark.parametrize(
    ("model", "size", "channels"),
    [("resnet18", 32, 3), ("resnet18", 97, 3), ("resnet18", 224, 3), ("conv4", 32, 3), ("conv6", 24, 3),
     ("convnet_mnist", 28, 1)],
)  # fmt: skip
def test_layer_sides_match_the_built_model(model: str, size: int, channels: int) -> None:
    net = build_model(model, 5, channels, size, [0.5] * channels, [0.2] * channels).eval()
    sides: dict[str, int] = {}
    for name, module in net.named_modules():
        if name.startswith("features.") and name.count(".") == 1:
            module.register_forward_hook(
                lambda _m, _i, out, name=name: sides.__setitem__(name, out.shape[-1])
            )
    with torch.no_grad():
        net(torch.zeros(1, channels, size, size))
    assert sides and {name: layer_side(model, name, size) for name in sides} == sides
    assert net.gradcam_layer == default_gradcam_layer(model, size)


def test_default_resnet_layer_is_the_deepest_fine_enough() -> None:
    assert default_gradcam_layer("resnet18", 224) == "features.layer4"  # 7 x 7
    assert default_gradcam_layer("resnet18", 64) == "features.layer3"  # layer4 would be 2 x 2
    assert default_gradcam_layer("resnet18", 32) == "features.layer2"  # layer4 would be 1 x 1
    assert default_gradcam_layer("conv4", 32) == "features.relu4"  # conv nets: their last block, unchanged
    assert coarse_gradcam_problem("lenet300", None, 28) is None


def test_a_coarse_layer_is_refused_in_one_line_naming_layer_size_and_remedy() -> None:
    overrides = {"study": {"datasets": ["cub"]}, "explanations": {"gradcam_layer": "features.layer4"},
                 "datasets": {"cub": {"image_size": 32, "model": "resnet18"}}}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        validate_params(merged(UNIT_PARAMS, overrides), SCHEMA)
    assert str(info.value) == (
        "params.yaml: datasets.cub: Grad-CAM layer features.layer4 of resnet18 gives 1 x 1 maps at image_size "
        "32, coarser than 4 x 4 (uniform maps that compare as equal); allowed: image_size >= 97 for this "
        "layer, or a finer explanations.gradcam_layer"
    )
    # the schema's smallest image size (16) still gives layer1 4 x 4, so the default is never refused
    # for a ResNet; a layer named explicitly is
    assert default_gradcam_layer("resnet18", 16) == "features.layer1"
    assert "layer4 of resnet18 gives 1 x 1 maps at image_size 8" in str(
        coarse_gradcam_problem("resnet18", None, 8)
    )
