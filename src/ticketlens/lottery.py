"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020) and its controls.

Round 0 trains the dense net from a seeded init. Ticket round r >= 1 prunes round r-1's trained weights
by magnitude, rewinds the survivors to init (or to iteration k) and retrains with the same data order.
Controls use the ticket's round-r mask: `reinit` with a new init, `randmask` with a random mask of the
same per-layer sparsity and the original init.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketlens.data.prepared import TEST, TRAIN, VALIDATION, PreparedData, load_prepared
from ticketlens.errors import UserError
from ticketlens.fileio import atomic_save, load_torch, write_json
from ticketlens.models import TicketNet, build_model
from ticketlens.pruning import (
    Masks,
    PruningRates,
    full_masks,
    install_masks,
    magnitude_prune,
    random_masks,
    remove_masks,
    sparsity_report,
)
from ticketlens.study import RANDMASK, REINIT, TICKET, TICKET_FILES, PruningSettings, Ticket, TrainingSettings
from ticketlens.training import BatchStream, early_stop, evaluate, train

log = logging.getLogger("ticketlens.lottery")


def init_seed(seed: int, branch: str, round_index: int) -> int:
    """The dense init uses `seed`; each reinit control draws a fresh init of its own."""
    return seed if branch != REINIT else 1_000_003 * (seed + 1) + round_index


def model_spec(data: PreparedData, model: str, width: float) -> dict[str, Any]:
    return {
        "name": model,
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "image_size": data.image_size,
        "mean": list(data.mean),
        "std": list(data.std),
        "width": float(width),
    }


def model_from_spec(spec: Mapping[str, Any]) -> TicketNet:
    return build_model(**spec)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return load_torch(path, "checkpoint")


def load_model(path: Path) -> TicketNet:
    """A ticket ready for explanation: eval mode, pruned weights exactly zero."""
    checkpoint = load_checkpoint(path)
    model = model_from_spec(checkpoint["model"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def seeded_init(spec: Mapping[str, Any], seed: int) -> TicketNet:
    torch.manual_seed(seed)
    return model_from_spec(spec)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _plan_masks(
    ticket: Ticket,
    pruning: PruningSettings,
    spec: Mapping[str, Any],
    previous: Path | None,
    ticket_checkpoint: Path | None,
) -> tuple[TicketNet, Masks, dict[str, torch.Tensor] | None, int]:
    """The model to train (at its starting weights), its masks, the rewind state to store, and the start iteration."""
    k = pruning.rewind_iteration
    if ticket.round == 0:
        if ticket.branch != TICKET:
            raise UserError(f"branch {ticket.branch} has no round 0 (controls start at round 1)")
        model = seeded_init(spec, ticket.seed)
        return model, full_masks(model, pruning.exclude), None, 0
    if ticket.branch == TICKET:
        if previous is None:
            raise UserError("ticket rounds >= 1 need --previous (the checkpoint they prune)")
        parent = load_checkpoint(previous)
        model = model_from_spec(spec)
        model.load_state_dict(parent["state_dict"])
        rates = PruningRates.from_settings(pruning)
        if pruning.one_shot:
            rates = rates.compounded(ticket.round)
        masks = magnitude_prune(model, parent["masks"], rates, pruning.scope)
        model.load_state_dict(parent["rewind_state"])
        return model, masks, parent["rewind_state"], k
    if ticket_checkpoint is None:
        raise UserError(f"control {ticket.branch} needs --ticket (the ticket checkpoint of the same round)")
    reference = load_checkpoint(ticket_checkpoint)
    if ticket.branch == REINIT:
        # A fresh init trains the full schedule: there is no early iteration of it to rewind to.
        model = seeded_init(spec, init_seed(ticket.seed, ticket.branch, ticket.round))
        return model, reference["masks"], None, 0
    generator = torch.Generator().manual_seed(init_seed(ticket.seed, RANDMASK, ticket.round) + 7)
    masks = random_masks(reference["masks"], generator)
    model = model_from_spec(spec)
    model.load_state_dict(reference["rewind_state"])
    return model, masks, reference["rewind_state"], k


def train_ticket(
    ticket: Ticket,
    data_path: Path,
    model: str,
    model_width: float,
    training: TrainingSettings,
    pruning: PruningSettings,
    out_dir: Path | None = None,
    previous: Path | None = None,
    ticket_checkpoint: Path | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Train one ticket (or control) and write checkpoint.pt and metrics.json into its folder.

    `previous` is the checkpoint a ticket round prunes; `ticket_checkpoint` the same round's ticket,
    whose mask (reinit) or sparsity and init (randmask) a control takes. `out_dir` defaults to the
    ticket's folder under results/.
    """
    out_dir = Path(out_dir) if out_dir is not None else ticket.folder
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_prepared(data_path)
    spec = model_spec(data, model, model_width)
    net, masks, rewind_state, start = _plan_masks(ticket, pruning, spec, previous, ticket_checkpoint)
    install_masks(net, masks)
    k = pruning.rewind_iteration
    rewind_file = out_dir / TICKET_FILES.rewind
    rewind_state = _round0_rewind(net, rewind_state, rewind_file, ticket.round, k)

    def capture_rewind(iteration: int, model_now: nn.Module) -> None:
        if ticket.round == 0 and iteration == k and k > 0 and not rewind_file.exists():
            atomic_save(_effective_state(model_now), rewind_file)

    stream = BatchStream(*_split(data, TRAIN), training.batch_size, ticket.seed)
    log.info("%s: training from iteration %d", ticket, start)
    started = time.perf_counter()
    state = train(
        net, stream, _split(data, VALIDATION), training, start, out_dir / TICKET_FILES.resume, capture_rewind
    )
    seconds = time.perf_counter() - started
    remove_masks(net)

    rewind_state = rewind_state or _stored_rewind_state(ticket, spec, k, rewind_file)
    test_loss, test_acc = evaluate(net, *_split(data, TEST))
    remaining, per_layer = sparsity_report(masks)
    metrics = {
        **dataclasses.asdict(ticket),
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "val_curve": state.val_curve,
        **early_stop(state.val_curve),
        "remaining_fraction": remaining,
        "remaining_per_layer": per_layer,
        **_timing(training, start, seconds),
    }
    checkpoint = {
        "state_dict": _state_copy(net),
        "masks": masks,
        "rewind_state": rewind_state,
        "model": spec,
        "seed": ticket.seed,
        "branch": ticket.branch,
        "round": ticket.round,
    }
    atomic_save(checkpoint, out_dir / TICKET_FILES.checkpoint)
    write_json(metrics, out_dir / TICKET_FILES.metrics, sort_keys=True)
    for leftover in (out_dir / TICKET_FILES.resume, rewind_file):
        leftover.unlink(missing_ok=True)
    log.info("%s: test_acc %.4f, %.2f%% weights remaining", ticket, test_acc, 100 * remaining)
    return metrics


def _split(data: PreparedData, split: int) -> tuple[torch.Tensor, torch.Tensor]:
    index = data.indices(split)
    return data.images[index], data.labels[index]


def _timing(training: TrainingSettings, start: int, seconds: float) -> dict[str, float]:
    return {
        "iterations": training.iterations,
        "start_iteration": start,
        "train_seconds": seconds,
        "images_per_second": (training.iterations - start) * training.batch_size / max(seconds, 1e-9),
    }


def _stored_rewind_state(ticket: Ticket, spec: Mapping[str, Any], k: int, rewind_file: Path) -> dict:
    """What the checkpoint stores to rewind to when planning gave none: the weights captured at
    iteration k (late rewinding of the dense ticket), else the branch's own initial weights."""
    if k > 0 and ticket.branch == TICKET:
        return load_torch(rewind_file, "rewind state")
    return _initial_state(spec, ticket.seed, ticket.branch, ticket.round)


def _round0_rewind(
    model: nn.Module, rewind_state: dict | None, rewind_file: Path, round_index: int, k: int
) -> dict | None:
    """Round 0 rewinds to its own init when k == 0; with k > 0 the state is captured during training."""
    if round_index == 0 and k == 0:
        return _effective_state(model)
    return rewind_state


def _effective_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as a plain model would have it (weight = weight_orig * mask), without pruning buffers."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("_mask"):
            continue
        if key.endswith("weight_orig"):
            base = key.removesuffix("_orig")
            state[base] = (value * model.state_dict()[base + "_mask"]).detach().clone()
        else:
            state[key] = value.detach().clone()
    return state


def _initial_state(
    spec: Mapping[str, Any], seed: int, branch: str, round_index: int
) -> dict[str, torch.Tensor]:
    return _state_copy(seeded_init(spec, init_seed(seed, branch, round_index)))
