"""Model init: Gaussian Glorot when asked (every conv and linear layer, zero biases), deterministic per
seed, the architecture's own init otherwise, and the setting reaches the trained tickets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import TOY, TOY_PRUNING, into
from ticketlens.errors import UserError
from ticketlens.lottery.models import MODELS, build_model, layer_names, prunable_layers
from ticketlens.study import TICKET_FILES, Ticket


def seeded(name: str, seed: int, init: str, channels: int = 3, size: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, 10, channels, size, [0.5] * channels, [0.25] * channels, width=0.5, init=init)


def glorot_std(module: nn.Module) -> float:
    receptive = module.weight[0, 0].numel()  # kernel area (1 for linear layers)
    fan_in, fan_out = module.weight.shape[1] * receptive, module.weight.shape[0] * receptive
    return (2.0 / (fan_in + fan_out)) ** 0.5


def kurtosis(values: torch.Tensor) -> float:
    centred = values.flatten().double() - values.double().mean()
    return float((centred**4).mean() / (centred**2).mean() ** 2)


@pytest.mark.parametrize("name", ["conv4", "convnet_mnist", "lenet300"])
def test_glorot_normal_has_glorot_scale_and_a_gaussian_shape(name: str) -> None:
    model = seeded(name, 0, "glorot_normal", channels=1, size=28 if name != "conv4" else 32)
    for layer_name, layer in prunable_layers(model).items():
        weights = layer.weight.detach()
        assert torch.all(layer.bias == 0), layer_name
        if weights.numel() >= 2000:  # enough draws for a 5% check of the spread
            assert weights.std().item() == pytest.approx(glorot_std(layer), rel=0.05), layer_name
            assert 2.7 < kurtosis(weights) < 3.3, (
                layer_name
            )  # normal: 3; uniform (PyTorch, xavier_uniform_): 1.8


def test_glorot_normal_is_deterministic_per_seed() -> None:
    first, again, other = (seeded("conv4", s, "glorot_normal").state_dict() for s in (3, 3, 4))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["features.conv1.weight"], other["features.conv1.weight"])


def test_default_init_is_the_architectures_own() -> None:
    conv = seeded("conv4", 0, "default")
    first = conv.features.conv1
    bound = 1 / (first.weight[0].numel() ** 0.5)  # PyTorch's kaiming_uniform(a=sqrt(5)) and bias bound
    assert first.weight.abs().max() <= bound and first.bias.abs().max() > 0
    assert 1.6 < kurtosis(first.weight.detach()) < 2.2  # uniform, not Gaussian
    # lenet300 is defined with Gaussian Glorot: its default and glorot_normal are the same draw
    lenet = [
        seeded("lenet300", 2, init, channels=1, size=28).state_dict() for init in ("default", "glorot_normal")
    ]
    assert all(torch.equal(lenet[0][k], lenet[1][k]) for k in lenet[0])
    with pytest.raises(UserError, match=r"unknown init 'he' \(allowed: default, glorot_normal\)"):
        seeded("conv4", 0, "he")


def test_training_init_reaches_the_ticket_and_its_controls(toy_data_path: Path, tmp_path: Path) -> None:
    import dataclasses

    from ticketlens.lottery.rounds import train_ticket

    training = dataclasses.replace(TOY.training, iterations=4, eval_every=4, init="glorot_normal")
    dense = Ticket("toy", 0, "ticket", 0)
    train_ticket(
        dense, toy_data_path, TOY.model, TOY.model_width, training, TOY_PRUNING, *into(tmp_path / "dense")
    )
    checkpoint = torch.load(tmp_path / "dense" / TICKET_FILES.checkpoint, weights_only=True)
    assert checkpoint["model"]["init"] == "glorot_normal"
    rewind = checkpoint["rewind_state"]  # round 0 rewinds to its own init
    assert torch.all(rewind["classifier.fc1.bias"] == 0) and torch.all(rewind["features.conv1.bias"] == 0)
    fc1 = rewind["classifier.fc1.weight"]
    assert fc1.std().item() == pytest.approx((2.0 / sum(fc1.shape)) ** 0.5, rel=0.05)
    reinit = Ticket("toy", 0, "reinit", 1)
    ticket = Ticket("toy", 0, "ticket", 1)
    train_ticket(ticket, toy_data_path, TOY.model, TOY.model_width, training, TOY_PRUNING, *into(tmp_path / "t1"),
                 previous=tmp_path / "dense" / TICKET_FILES.checkpoint)  # fmt: skip
    train_ticket(reinit, toy_data_path, TOY.model, TOY.model_width, training, TOY_PRUNING, *into(tmp_path / "r1"),
                 ticket_checkpoint=tmp_path / "t1" / TICKET_FILES.checkpoint)  # fmt: skip
    fresh = torch.load(tmp_path / "r1" / TICKET_FILES.checkpoint, weights_only=True)["rewind_state"]
    assert torch.all(fresh["classifier.fc1.bias"] == 0)  # the control's new init is Glorot too
    assert not torch.equal(fresh["classifier.fc1.weight"], fc1)


@pytest.mark.parametrize("name", MODELS)
def test_layer_names_are_the_built_models_names(name):
    """config checks params' layer names against `layer_names` (a meta-device build): the same names as a
    real model of any width, class count and image size (issue 22 item 11)."""
    model = build_model(name, 5, 3, 32, [0.5] * 3, [0.25] * 3, width=0.25)
    names = layer_names(name)
    assert names.modules == tuple(n for n, _ in model.named_modules() if n)
    assert names.prunable == tuple(prunable_layers(model))
    assert (model.gradcam_layer is None) == (names.spatial == ())
    assert {model.gradcam_layer, *model.tcav_layers} - {None} <= set(names.modules)
