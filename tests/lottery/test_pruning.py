"""Magnitude pruning: exact counts per round and layer, one global threshold vs per kind vs per layer,\nmasks that stay zero."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from helpers import training_settings
from ticketlens.errors import UserError
from ticketlens.lottery.models import Normalize, TicketNet, build_model, prunable_layers
from ticketlens.lottery.pruning import (
    PruningRates,
    full_masks,
    install_masks,
    magnitude_prune,
    random_masks,
    remove_masks,
    sparsity_report,
)
from ticketlens.lottery.training import BatchStream, train

RATES = PruningRates(conv=0.2, fc=0.4, output=0.1)


def small_model(name: str = "convnet_mnist"):
    torch.manual_seed(0)
    return build_model(name, num_classes=10, in_channels=1, image_size=28, mean=[0.1], std=[0.3], width=0.5)


def expected_survivors(n: int, rate: float, rounds: int) -> int:
    for _ in range(rounds):
        n -= round(rate * n)
    return n


@pytest.mark.parametrize("rounds", [1, 2, 3])
def test_layerwise_prunes_exact_fraction_of_remaining_per_layer(rounds):
    model = small_model()
    masks = full_masks(model)
    for _ in range(rounds):
        masks = magnitude_prune(model, masks, RATES, "layerwise")
    for key, mask in masks.items():
        kind = "output" if key == "classifier.out.weight" else ("conv" if "conv" in key else "fc")
        assert int(mask.sum()) == expected_survivors(mask.numel(), RATES.for_kind(kind), rounds), key


def test_layerwise_keeps_the_largest_magnitudes():
    model = small_model()
    masks = magnitude_prune(model, full_masks(model), RATES, "layerwise")
    for name, module in prunable_layers(model).items():
        mask = masks[f"{name}.weight"]
        weights = module.weight.detach().abs()
        assert weights[mask].min() >= weights[~mask].max()


def test_global_per_kind_uses_one_threshold_per_rate_group():
    model = small_model()
    masks = magnitude_prune(model, full_masks(model), RATES, "global_per_kind")
    layers = prunable_layers(model)
    conv = [n for n in layers if "conv" in n]
    pooled = torch.cat([layers[n].weight.detach().abs().flatten() for n in conv])
    pooled_mask = torch.cat([masks[f"{n}.weight"].flatten() for n in conv])
    assert int(pooled_mask.sum()) == expected_survivors(pooled.numel(), RATES.conv, 1)
    assert pooled[pooled_mask].min() >= pooled[~pooled_mask].max()
    # Not layer-wise pruning in disguise: per-layer fractions differ.
    fractions = {n: float(masks[f"{n}.weight"].float().mean()) for n in conv}
    assert len({round(f, 6) for f in fractions.values()}) > 1
    out = masks["classifier.out.weight"]
    assert int(out.sum()) == expected_survivors(out.numel(), RATES.output, 1)


def hand_made_net() -> TicketNet:
    """conv (4 weights, |w| 11..14) -> fc (32 weights, |w| 0.01..0.32) -> output (4 weights, |w| 5..8),
    signs alternating: one threshold over all layers and one per kind disagree completely."""
    features = nn.Sequential(OrderedDict(conv1=nn.Conv2d(1, 4, kernel_size=1)))
    classifier = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(16, 2), out=nn.Linear(2, 2)))
    model = TicketNet(Normalize([0.0], [1.0]), features, classifier, None, [])
    with torch.no_grad():
        for module, magnitudes in ((features.conv1, torch.arange(11.0, 15.0)),
                                   (classifier.fc1, torch.arange(1.0, 33.0) / 100),
                                   (classifier.out, torch.arange(5.0, 9.0))):  # fmt: skip
            signs = torch.tensor([1.0, -1.0]).repeat(magnitudes.numel() // 2)
            module.weight.copy_((magnitudes * signs).view_as(module.weight))
    return model


def kept_magnitudes(model: TicketNet, masks: dict) -> dict[str, list[float]]:
    layers = prunable_layers(model)
    return {
        key: sorted(round(v, 2) for v in layers[key.removesuffix(".weight")].weight.abs()[mask].tolist())
        for key, mask in masks.items()
    }


def test_global_is_one_magnitude_threshold_over_all_layers():
    model = hand_made_net()
    half = PruningRates(conv=0.5, fc=0.5, output=0.5)
    fc_top = [round(v / 100, 2) for v in range(21, 33)]
    one = magnitude_prune(model, full_masks(model), half, "global")
    # the 20 smallest of all 40 weights are all in fc1: conv and output keep everything
    assert kept_magnitudes(model, one) == {
        "features.conv1.weight": [11.0, 12.0, 13.0, 14.0],
        "classifier.fc1.weight": fc_top,
        "classifier.out.weight": [5.0, 6.0, 7.0, 8.0],
    }
    fresh = hand_made_net()  # pruning zeroes the pruned weights of the model it is given
    per_kind = magnitude_prune(fresh, full_masks(fresh), half, "global_per_kind")
    assert kept_magnitudes(fresh, per_kind) == {
        "features.conv1.weight": [13.0, 14.0],
        "classifier.fc1.weight": [round(v / 100, 2) for v in range(17, 33)],
        "classifier.out.weight": [7.0, 8.0],
    }
    # a second round ranks only the 20 survivors and prunes half of them: 10 more from fc1
    two = magnitude_prune(model, one, half, "global")
    assert kept_magnitudes(model, two)["classifier.fc1.weight"] == [0.31, 0.32]
    assert sparsity_report(two)[0] == 10 / 40


def test_global_prunes_what_the_per_kind_rates_ask_in_total():
    model = hand_made_net()
    rates = PruningRates(conv=0.5, fc=0.25, output=0.5)  # 2 + 8 + 2 = 12 weights, one threshold
    masks = magnitude_prune(model, full_masks(model), rates, "global")
    kept = kept_magnitudes(model, masks)
    assert kept["classifier.fc1.weight"] == [round(v / 100, 2) for v in range(13, 33)]
    assert len(kept["features.conv1.weight"]) == 4 and len(kept["classifier.out.weight"]) == 4
    with pytest.raises(
        UserError, match="unknown pruning scope .globl. .allowed: global, layerwise, global_per_kind"
    ):
        magnitude_prune(model, full_masks(model), rates, "globl")


def test_biases_and_excluded_layers_are_never_pruned():
    model = small_model()
    masks = magnitude_prune(model, full_masks(model, exclude=["features.conv1"]), RATES, "layerwise")
    assert "features.conv1.weight" not in masks
    assert all(key.endswith(".weight") for key in masks)
    with pytest.raises(UserError, match="unknown layers: nope"):
        full_masks(model, exclude=["nope"])


def test_resnet_batchnorm_is_not_prunable():
    model = build_model("resnet18", 5, 3, 32, [0.5] * 3, [0.2] * 3)
    layers = prunable_layers(model)
    assert layers and not any(isinstance(m, torch.nn.BatchNorm2d) for m in layers.values())


def test_pruned_weights_stay_exactly_zero_through_momentum_and_weight_decay():
    model = small_model()
    masks = magnitude_prune(model, full_masks(model), PruningRates(0.5, 0.5, 0.5), "layerwise")
    install_masks(model, masks)
    images = torch.randint(0, 255, (64, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (64,))
    config = training_settings(
        optimizer="sgd", lr=0.1, batch_size=16, iterations=12, eval_every=12, momentum=0.9, weight_decay=0.01
    )
    train(model, BatchStream(images, labels, 16, seed=0), (images, labels), config)
    remove_masks(model)
    for name, module in prunable_layers(model).items():
        assert torch.all(module.weight[~masks[f"{name}.weight"]] == 0), name


def test_random_masks_match_per_layer_sparsity_but_not_positions():
    model = small_model()
    ticket = magnitude_prune(model, full_masks(model), RATES, "layerwise")
    random = random_masks(ticket, torch.Generator().manual_seed(1))
    assert sparsity_report(random) == sparsity_report(ticket)
    assert any(not torch.equal(random[k], ticket[k]) for k in ticket)


def test_compounded_rate_reaches_iterative_sparsity():
    rates = RATES.compounded(3)
    assert rates.fc == pytest.approx(1 - 0.6**3)
