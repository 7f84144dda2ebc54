"""Magnitude pruning: exact counts per round and layer, global vs layer-wise, masks that stay zero."""

from __future__ import annotations

import pytest
import torch

from conftest import training_settings
from ticketlens.errors import UserError
from ticketlens.models import build_model, prunable_layers
from ticketlens.pruning import (
    PruningRates,
    full_masks,
    install_masks,
    magnitude_prune,
    random_masks,
    remove_masks,
    sparsity_report,
)
from ticketlens.training import BatchStream, train

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


def test_global_uses_one_threshold_per_rate_group():
    model = small_model()
    masks = magnitude_prune(model, full_masks(model), RATES, "global")
    layers = prunable_layers(model)
    conv = [n for n in layers if "conv" in n]
    pooled = torch.cat([layers[n].weight.detach().abs().flatten() for n in conv])
    pooled_mask = torch.cat([masks[f"{n}.weight"].flatten() for n in conv])
    assert int(pooled_mask.sum()) == expected_survivors(pooled.numel(), RATES.conv, 1)
    assert pooled[pooled_mask].min() >= pooled[~pooled_mask].max()
    # Global pruning is not layer-wise pruning in disguise: per-layer fractions differ.
    fractions = {n: float(masks[f"{n}.weight"].float().mean()) for n in conv}
    assert len({round(f, 6) for f in fractions.values()}) > 1
    out = masks["classifier.out.weight"]
    assert int(out.sum()) == expected_survivors(out.numel(), RATES.output, 1)


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
