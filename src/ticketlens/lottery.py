"""Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020) and its controls.

Round 0 trains the dense net from a seeded init. Ticket round r >= 1 prunes round r-1's trained weights
by magnitude, rewinds the survivors to init (or to iteration k) and retrains with the same data order.
Controls use the ticket's round-r mask: `reinit` with a new init, `randmask` with a random mask of the
same per-layer sparsity and the original init.
"""

from __future__ import annotations

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
from ticketlens.training import BatchStream, DivergedError, TrainConfig, early_stop, evaluate, train

log = logging.getLogger("ticketlens.lottery")

BRANCHES = ("ticket", "reinit", "randmask")
CHECKPOINT, METRICS, RESUME, REWIND = "checkpoint.pt", "metrics.json", "resume.pt", "rewind.pt"


def init_seed(seed: int, branch: str, round_index: int) -> int:
    """The dense init uses `seed`; each reinit control draws a fresh init of its own."""
    return seed if branch != "reinit" else 1_000_003 * (seed + 1) + round_index


def model_spec(data: PreparedData, dataset_config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": dataset_config["model"],
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "image_size": data.image_size,
        "mean": list(data.mean),
        "std": list(data.std),
        "width": float(dataset_config.get("model_width", 1.0)),
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


def _rewind_point(config: Mapping[str, Any]) -> int:
    return int(config["pruning"]["rewind_iteration"])


def _plan_masks(
    branch: str,
    round_index: int,
    config: Mapping[str, Any],
    spec: Mapping[str, Any],
    seed: int,
    previous: Path | None,
    ticket: Path | None,
) -> tuple[TicketNet, Masks, dict[str, torch.Tensor] | None, int]:
    """The model to train (at its starting weights), its masks, the rewind state to store, and the start iteration."""
    pruning = config["pruning"]
    k = _rewind_point(config)
    if round_index == 0:
        if branch != "ticket":
            raise UserError(f"branch {branch} has no round 0 (controls start at round 1)")
        model = seeded_init(spec, seed)
        return model, full_masks(model, pruning["exclude"]), None, 0
    if branch == "ticket":
        if previous is None:
            raise UserError("ticket rounds >= 1 need --previous (the checkpoint they prune)")
        parent = load_checkpoint(previous)
        model = model_from_spec(spec)
        model.load_state_dict(parent["state_dict"])
        rates = PruningRates.from_config(pruning)
        if pruning["one_shot"]:
            rates = rates.compounded(round_index)
        masks = magnitude_prune(model, parent["masks"], rates, pruning["scope"])
        model.load_state_dict(parent["rewind_state"])
        return model, masks, parent["rewind_state"], k
    if ticket is None:
        raise UserError(f"control {branch} needs --ticket (the ticket checkpoint of the same round)")
    reference = load_checkpoint(ticket)
    if branch == "reinit":
        # A fresh init trains the full schedule: there is no early iteration of it to rewind to.
        model = seeded_init(spec, init_seed(seed, branch, round_index))
        return model, reference["masks"], None, 0
    generator = torch.Generator().manual_seed(init_seed(seed, "randmask", round_index) + 7)
    masks = random_masks(reference["masks"], generator)
    model = model_from_spec(spec)
    model.load_state_dict(reference["rewind_state"])
    return model, masks, reference["rewind_state"], k


def run_round(
    data_path: Path,
    dataset: str,
    seed: int,
    branch: str,
    round_index: int,
    config: Mapping[str, Any],
    out_dir: Path,
    previous: Path | None = None,
    ticket: Path | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Train one ticket (or control) and write checkpoint.pt and metrics.json into out_dir."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_prepared(data_path)
    dataset_config = config["dataset"]
    training = TrainConfig.from_config(dataset_config["training"])
    spec = model_spec(data, dataset_config)
    model, masks, rewind_state, start = _plan_masks(branch, round_index, config, spec, seed, previous, ticket)
    install_masks(model, masks)

    k = _rewind_point(config)
    rewind_file = out_dir / REWIND
    rewind_state = _round0_rewind(model, rewind_state, rewind_file, round_index, k)

    def capture_rewind(iteration: int, net: nn.Module) -> None:
        if round_index == 0 and iteration == k and k > 0 and not rewind_file.exists():
            atomic_save(_effective_state(net), rewind_file)

    train_index, val_index, test_index = (data.indices(s) for s in (TRAIN, VALIDATION, TEST))
    stream = BatchStream(data.images[train_index], data.labels[train_index], training.batch_size, seed)
    validation = (data.images[val_index], data.labels[val_index])
    log.info("%s seed %d %s round %d: training from iteration %d", dataset, seed, branch, round_index, start)
    started = time.perf_counter()
    try:
        state = train(model, stream, validation, training, start, out_dir / RESUME, capture_rewind)
    except DivergedError as err:  # train removed resume.pt; the rewind weights come from the same run
        rewind_file.unlink(missing_ok=True)
        raise err.for_key(f"datasets.{dataset}.training.lr") from None
    seconds = time.perf_counter() - started
    remove_masks(model)

    if rewind_state is None:
        rewind_state = load_torch(rewind_file, "rewind state") if k > 0 and branch == "ticket" else None
    if rewind_state is None:
        rewind_state = _initial_state(spec, seed, branch, round_index)
    test_loss, test_acc = evaluate(model, data.images[test_index], data.labels[test_index])
    remaining, per_layer = sparsity_report(masks)
    metrics = {
        "dataset": dataset,
        "seed": seed,
        "branch": branch,
        "round": round_index,
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "val_curve": state.val_curve,
        **early_stop(state.val_curve),
        "remaining_fraction": remaining,
        "remaining_per_layer": per_layer,
        "iterations": training.iterations,
        "start_iteration": start,
        "train_seconds": seconds,
        "images_per_second": (training.iterations - start) * training.batch_size / max(seconds, 1e-9),
    }
    checkpoint = {
        "state_dict": _state_copy(model),
        "masks": masks,
        "rewind_state": rewind_state,
        "model": spec,
        "seed": seed,
        "branch": branch,
        "round": round_index,
    }
    atomic_save(checkpoint, out_dir / CHECKPOINT)
    write_json(metrics, out_dir / METRICS, sort_keys=True)
    for leftover in (out_dir / RESUME, rewind_file):
        leftover.unlink(missing_ok=True)
    log.info(
        "%s seed %d %s round %d: test_acc %.4f, %.2f%% weights remaining",
        dataset,
        seed,
        branch,
        round_index,
        test_acc,
        100 * remaining,
    )
    return metrics


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
