"""Unstructured magnitude pruning with torch.nn.utils.prune.

Masks travel between rounds as plain {"layer.weight": bool tensor} dicts; while a model trains they are
installed as torch pruning parametrisations (weight = weight_orig * weight_mask), so pruned weights stay
exactly zero whatever momentum or weight decay do to weight_orig.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from ticketlens.models import TicketNet, prunable_layers
from ticketlens.study import PruningSettings

Masks = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PruningRates:
    """Fraction of the remaining weights pruned per round, by layer kind."""

    conv: float
    fc: float
    output: float

    @classmethod
    def from_settings(cls, pruning: PruningSettings) -> PruningRates:
        return cls(pruning.rate_conv, pruning.rate_fc, pruning.rate_output)

    def for_kind(self, kind: str) -> float:
        return getattr(self, kind)

    def compounded(self, rounds: int) -> PruningRates:
        """The per-kind rate that reaches the sparsity of `rounds` iterative rounds in one step."""
        return PruningRates(*(1 - (1 - rate) ** rounds for rate in (self.conv, self.fc, self.output)))


def layer_kind(model: TicketNet, name: str, module: nn.Module) -> str:
    if name == model.output_layer:
        return "output"
    return "conv" if isinstance(module, nn.Conv2d) else "fc"


def full_masks(model: TicketNet, exclude: Sequence[str] = ()) -> Masks:
    return {
        f"{n}.weight": torch.ones_like(m.weight, dtype=torch.bool)
        for n, m in prunable_layers(model, exclude).items()
    }


def install_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Attach masks as torch pruning parametrisations (replacing any existing ones)."""
    modules = dict(model.named_modules())
    for key, mask in masks.items():
        module = modules[key.removesuffix(".weight")]
        if prune.is_pruned(module):
            prune.remove(module, "weight")
        prune.custom_from_mask(module, "weight", mask.to(module.weight.dtype))


def remove_masks(model: nn.Module) -> None:
    """Make pruning permanent: weight becomes weight_orig * mask, hooks and buffers go away."""
    for module in model.modules():
        if prune.is_pruned(module):
            for hook in list(module._forward_pre_hooks.values()):
                if isinstance(hook, prune.BasePruningMethod):
                    prune.remove(module, hook._tensor_name)


def read_masks(model: nn.Module, keys: Sequence[str]) -> Masks:
    modules = dict(model.named_modules())
    masks = {}
    for key in keys:
        module = modules[key.removesuffix(".weight")]
        mask = getattr(module, "weight_mask", None)
        masks[key] = (
            mask.bool().clone() if mask is not None else torch.ones_like(module.weight, dtype=torch.bool)
        )
    return masks


def magnitude_prune(
    model: TicketNet,
    masks: Masks,
    rates: PruningRates,
    scope: str,
) -> Masks:
    """Prune a fraction of each group's REMAINING weights by magnitude of the model's current weights.

    scope "layerwise": every layer on its own at its kind's rate. scope "global": one magnitude threshold
    across all layers that share a rate (conv, fc, output), as in open_lth's global sparse pruning.
    Only layers present in `masks` are pruned; their current weights are the importance scores.
    """
    install_masks(model, masks)
    modules = dict(model.named_modules())
    groups: dict[str, list[tuple[nn.Module, str]]] = {}
    for key in masks:
        name = key.removesuffix(".weight")
        kind = layer_kind(model, name, modules[name])
        group = kind if scope == "global" else name
        groups.setdefault(group, []).append((modules[name], kind))
    for members in groups.values():
        rate = rates.for_kind(members[0][1])
        params = [(module, "weight") for module, _ in members]
        # global_unstructured with L1Unstructured prunes `rate` of the entries not yet masked out.
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=rate)
    new_masks = read_masks(model, list(masks))
    remove_masks(model)
    return new_masks


def random_masks(like: Masks, generator: torch.Generator) -> Masks:
    """Random masks with exactly the per-layer number of survivors of `like` (the random-pruning control)."""
    masks = {}
    for key, mask in like.items():
        keep = int(mask.sum())
        order = torch.randperm(mask.numel(), generator=generator)
        flat = torch.zeros(mask.numel(), dtype=torch.bool)
        flat[order[:keep]] = True
        masks[key] = flat.view_as(mask)
    return masks


def sparsity_report(masks: Masks) -> tuple[float, dict[str, float]]:
    """Overall and per-layer fraction of prunable weights remaining."""
    per_layer = {key: float(mask.float().mean()) for key, mask in masks.items()}
    total = sum(mask.numel() for mask in masks.values())
    remaining = sum(int(mask.sum()) for mask in masks.values())
    return remaining / total, per_layer
