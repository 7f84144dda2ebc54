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

from ticketlens.errors import UserError
from ticketlens.lottery.models import TicketNet, prunable_layers
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


SCOPES = ("global", "layerwise", "global_per_kind")  # the values of pruning.scope


def magnitude_prune(
    model: TicketNet,
    masks: Masks,
    rates: PruningRates,
    scope: str,
) -> Masks:
    """Prune by magnitude of the model's current weights, among each threshold group's REMAINING weights.

    scope "global": ONE magnitude threshold over all prunable layers, as open_lth's `sparse_global`
    (torch's `global_unstructured`). It removes as many weights as the per-kind rates ask for in total
    (each layer's rate times its remaining weights, summed; with equal rates, that fraction of all
    remaining weights), but the threshold, not the layer, decides where they go. "global_per_kind": one
    threshold per layer kind (conv, fc, output), each at its rate. "layerwise": every layer on its own.
    Only layers present in `masks` are pruned; their current weights are the importance scores.
    """
    install_masks(model, masks)
    modules = dict(model.named_modules())
    layers = {key: modules[key.removesuffix(".weight")] for key in masks}
    kinds = {key: layer_kind(model, key.removesuffix(".weight"), module) for key, module in layers.items()}
    for group in threshold_groups(kinds, scope):
        params = [(layers[key], "weight") for key in group]
        amount = prune_count({key: rates.for_kind(kinds[key]) for key in group}, masks)
        # L1Unstructured inside global_unstructured ranks only the entries not yet masked out
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    new_masks = read_masks(model, list(masks))
    remove_masks(model)
    return new_masks


def threshold_groups(kinds: Mapping[str, str], scope: str) -> list[list[str]]:
    """The layers (mask keys) that share one magnitude threshold, per pruning scope."""
    if scope == "global":
        return [list(kinds)]
    if scope == "global_per_kind":
        groups: dict[str, list[str]] = {}
        for key, kind in kinds.items():
            groups.setdefault(kind, []).append(key)
        return list(groups.values())
    if scope == "layerwise":
        return [[key] for key in kinds]
    raise UserError(f"unknown pruning scope '{scope}' (allowed: {', '.join(SCOPES)})")


def prune_count(rate_of: Mapping[str, float], masks: Masks) -> int:
    """How many remaining weights a group loses: sum over its layers of rate x remaining weights.

    Layers that share a rate are summed first and rounded once, exactly as torch rounds a fractional
    amount (round(rate x remaining)), so single-rate groups prune what `amount=rate` would.
    """
    remaining_at: dict[float, int] = {}
    for key, rate in rate_of.items():
        remaining_at[rate] = remaining_at.get(rate, 0) + int(masks[key].sum())
    return round(sum(rate * remaining for rate, remaining in remaining_at.items()))


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
