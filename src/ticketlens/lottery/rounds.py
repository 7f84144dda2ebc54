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
from ticketlens.device import configure, host, model_device, resolve_device
from ticketlens.errors import UserError
from ticketlens.fileio import atomic_save, file_sha256, load_torch, write_json
from ticketlens.lottery.models import TicketNet, build_model
from ticketlens.lottery.pretrained import IMAGENET_MEAN, IMAGENET_STD, load_imagenet
from ticketlens.lottery.provenance import (
    CHECKPOINT_SHA,
    DATA_SHA,
    PARENT_SHA,
    SETTINGS_SHA,
    check_file_sha,
    check_identity,
    check_trained_on,
    folder_ticket,
    identity,
    recorded_checkpoint_sha,
    settings_fingerprint,
)
from ticketlens.lottery.pruning import (
    Masks,
    PruningRates,
    full_masks,
    install_masks,
    magnitude_prune,
    random_masks,
    remove_masks,
    sparsity_report,
)
from ticketlens.lottery.training import (
    EARLY_STOP,
    BatchStream,
    DivergedError,
    TrainState,
    early_stop,
    effective_state,
    evaluate,
    keep_resume,
    late_val_gain,
    train,
)
from ticketlens.study import (
    DENSE_ROUND,
    RANDMASK,
    REINIT,
    TICKET,
    TICKET_FILES,
    PruningSettings,
    Ticket,
    TrainingSettings,
)

log = logging.getLogger("ticketlens.lottery.rounds")


def init_seed(seed: int, branch: str, round_index: int) -> int:
    """The dense init uses `seed`; each reinit control draws a fresh init of its own."""
    return seed if branch != REINIT else 1_000_003 * (seed + 1) + round_index


def model_spec(data: PreparedData, model: str, width: float, training: TrainingSettings) -> dict[str, Any]:
    """What builds the model (the checkpoint's `model`). ImageNet weights bring ImageNet's normalisation and
    the key `model_init` (absent for scratch, so scratch checkpoints are what they always were)."""
    imagenet = training.model_init == "imagenet"
    spec = {
        "name": model,
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "image_size": data.image_size,
        "mean": list(IMAGENET_MEAN if imagenet else data.mean),
        "std": list(IMAGENET_STD if imagenet else data.std),
        "width": float(width),
        "init": training.init,
    }
    return {**spec, "model_init": "imagenet"} if imagenet else spec


def model_from_spec(spec: Mapping[str, Any]) -> TicketNet:
    """The architecture of a spec with its seeded scratch init (weights are loaded or copied after)."""
    return build_model(**{key: value for key, value in spec.items() if key != "model_init"})


def load_checkpoint(
    path: Path, expected: Ticket | None = None, role: str = "the checkpoint of"
) -> dict[str, Any]:
    """A checkpoint, refused in one line unless it is what it should be: the ticket `expected` (default: the
    ticket whose folder holds it) and the file its metrics.json was written with."""
    return load_checked(path, expected, role)[0]


def load_checked(
    path: Path, expected: Ticket | None = None, role: str = "the checkpoint of"
) -> tuple[dict[str, Any], str]:
    """`load_checkpoint` plus the file's sha256 (what a child records as its parent)."""
    path = Path(path)
    if not path.is_file():
        load_torch(path, "checkpoint")  # the one-line "not found"
    digest = check_file_sha(path, recorded_checkpoint_sha(path))
    checkpoint = load_torch(path, "checkpoint")
    expected = expected if expected is not None else folder_ticket(path)
    if expected is not None:
        check_identity(checkpoint, expected, path, role)
    return checkpoint, digest


def load_model(path: Path, device: torch.device | None = None, data_path: Path | None = None) -> TicketNet:
    """A ticket ready for explanation on `device` (None: host memory): eval mode, pruned weights exactly
    zero (identity and hash checked); with `data_path`, refused unless that is the data it was trained on."""
    checkpoint = load_checkpoint(path)
    if data_path is not None:
        check_trained_on(checkpoint, Path(path), Path(data_path))
    model = model_from_spec(checkpoint["model"])
    model.load_state_dict(checkpoint["state_dict"])
    return (model if device is None else model.to(device)).eval()


def seeded_init(spec: Mapping[str, Any], seed: int, weights_file: str | None = None) -> TicketNet:
    """The initial weights drawn from `seed`; with `model_init: imagenet` torchvision's ImageNet weights
    and an output layer drawn from `seed` (`pretrained.load_imagenet`)."""
    torch.manual_seed(seed)
    model = model_from_spec(spec)
    if spec.get("model_init") == "imagenet":
        load_imagenet(model, spec["name"], model.output_layer, weights_file, seed)
    return model


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: host(v).clone() for k, v in model.state_dict().items()}


# What a round's checkpoint stores as `rewind_state`: the weights the next round rewinds survivors to.
PARENT_REWIND = "parent"  # the rewind state the round started from, passed on
OWN_INIT = "own init"  # the branch's own fresh init (the random re-init control)
DENSE_INIT = "dense init"  # the dense net's init, captured before training
ITERATION_K = "iteration k"  # the dense net's weights at iteration k, captured during training (rewind.pt)


def rewind_source(ticket: Ticket, k: int) -> str:
    """What a round rewinds to, decided here only. The dense net rewinds to its init (Frankle & Carbin) or,
    with late rewinding (k = `pruning.rewind_iteration` > 0), to its weights at iteration k; every ticket
    round and the random-mask control pass that state on (they start from it at iteration k); the random
    re-init control has its own fresh init (and also starts at iteration k, open_lth's re-initialisation)."""
    if ticket.branch == REINIT:
        return OWN_INIT
    if ticket.round > DENSE_ROUND:
        return PARENT_REWIND
    return ITERATION_K if k > 0 else DENSE_INIT


@dataclasses.dataclass
class Plan:
    """Where a round starts: the model at its starting weights, its masks, the rewind state it started
    from (None for the dense net and the re-init control), the start iteration and the parent checkpoint's
    sha256."""

    model: TicketNet
    masks: Masks
    parent_rewind: dict[str, torch.Tensor] | None
    start: int
    parent_sha: str | None


def _plan(
    ticket: Ticket,
    pruning: PruningSettings,
    spec: Mapping[str, Any],
    previous: Path | None,
    ticket_checkpoint: Path | None,
    weights_file: str | None = None,
) -> Plan:
    k = pruning.rewind_iteration
    if ticket.round == 0:
        if ticket.branch != TICKET:
            raise UserError(f"branch {ticket.branch} has no round 0 (controls start at round 1)")
        model = seeded_init(spec, ticket.seed, weights_file)
        return Plan(model, full_masks(model, pruning.exclude), None, 0, None)
    parent_ticket = ticket.parent(pruning.one_shot)
    if ticket.branch == TICKET:
        if previous is None:
            raise UserError("ticket rounds >= 1 need --previous (the checkpoint they prune)")
        parent, digest = load_checked(previous, parent_ticket, "the checkpoint to prune,")
        model = model_from_spec(spec)
        model.load_state_dict(parent["state_dict"])
        rates = PruningRates.from_settings(pruning)
        if pruning.one_shot:
            rates = rates.compounded(ticket.round)
        masks = magnitude_prune(model, parent["masks"], rates, pruning.scope)
        model.load_state_dict(parent["rewind_state"])
        return Plan(model, masks, parent["rewind_state"], k, digest)
    if ticket_checkpoint is None:
        raise UserError(f"control {ticket.branch} needs --ticket-checkpoint (the ticket of the same round)")
    reference, digest = load_checked(ticket_checkpoint, parent_ticket, "the control's ticket,")
    if ticket.branch == REINIT:
        # A fresh init with the ticket's mask, trained from the rewind step like the ticket (open_lth's
        # random re-initialisation), so both see the same number of steps. Always a scratch init: with
        # ImageNet weights the control asks whether the ticket needs them (Chen et al. 2021).
        model = seeded_init(_scratch(spec), init_seed(ticket.seed, ticket.branch, ticket.round))
        return Plan(model, reference["masks"], None, k, digest)
    generator = torch.Generator().manual_seed(init_seed(ticket.seed, RANDMASK, ticket.round) + 7)
    masks = random_masks(reference["masks"], generator)
    model = model_from_spec(spec)
    model.load_state_dict(reference["rewind_state"])
    return Plan(model, masks, reference["rewind_state"], k, digest)


def round_fingerprint(
    ticket: Ticket,
    spec: Mapping[str, Any],
    training: TrainingSettings,
    pruning: PruningSettings,
    parent_sha: str | None,
    data_sha: str,
    threads: int,
    device_type: str,
) -> dict[str, Any]:
    """Everything that determines a round's result: an in-round resume.pt is used only when it matches.
    (`checkpoint_every` only decides when resume.pt is written.)"""
    return {
        "ticket": identity(ticket),
        "model": {k: v for k, v in spec.items() if k not in ("mean", "std")},
        "training": training.to_dict(exclude=("checkpoint_every",)),
        "pruning": pruning.to_dict(),
        "parent_sha256": parent_sha,
        "data_sha256": data_sha,
        "threads": threads,
        "device": device_type,
    }


def train_ticket(
    ticket: Ticket,
    data_path: Path,
    model: str,
    model_width: float,
    training: TrainingSettings,
    pruning: PruningSettings,
    checkpoint: Path | None = None,
    metrics: Path | None = None,
    previous: Path | None = None,
    ticket_checkpoint: Path | None = None,
    threads: int = 1,
    device: str = "auto",
) -> dict[str, Any]:
    """Train one ticket (or control) and write `checkpoint` and `metrics` (default: checkpoint.pt and
    metrics.json of its folder under results/; the in-round resume.pt and rewind.pt live beside the
    checkpoint). `previous` is the checkpoint a ticket round prunes; `ticket_checkpoint` the same round's
    ticket, whose mask (reinit) or sparsity and init (randmask) a control takes; both are checked to be
    those tickets (identity and hash). `device` is `study.device`: the round is planned in host memory and
    trained there; the files hold host tensors."""
    checkpoint_path = Path(checkpoint) if checkpoint is not None else ticket.file("checkpoint")
    metrics_path = Path(metrics) if metrics is not None else ticket.file("metrics")
    out_dir = checkpoint_path.parent
    torch.set_num_threads(threads)
    where = resolve_device(device)
    configure(where)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_prepared(data_path)
    data_sha = file_sha256(Path(data_path))
    spec = model_spec(data, model, model_width, training)
    plan = _plan(ticket, pruning, spec, previous, ticket_checkpoint, training.weights_file)
    fingerprint = round_fingerprint(
        ticket, spec, training, pruning, plan.parent_sha, data_sha, threads, where.type
    )
    install_masks(plan.model, plan.masks)
    source = rewind_source(ticket, pruning.rewind_iteration)
    initial = effective_state(plan.model) if source == DENSE_INIT else None
    plan.model.to(where)
    started = time.perf_counter()
    state = _train_round(ticket, data, training, pruning, plan, out_dir, fingerprint)
    seconds = time.perf_counter() - started
    remove_masks(plan.model)
    rewind_state = _rewind_state(source, ticket, spec, plan, initial, out_dir / TICKET_FILES.rewind)
    round_metrics = {
        **identity(ticket),
        **_test_metrics(plan.model, spec, state, training, data),
        **_curve_metrics(state, plan.masks),
        **_timing(training, plan.start, seconds),
        PARENT_SHA: plan.parent_sha,
        SETTINGS_SHA: settings_fingerprint(model, model_width, training, pruning),
    }
    round_checkpoint = {
        "state_dict": _state_copy(plan.model),
        "masks": plan.masks,
        "rewind_state": rewind_state,
        "model": spec,
        **identity(ticket),
        PARENT_SHA: plan.parent_sha,
        DATA_SHA: data_sha,
    }
    _write_round(round_checkpoint, round_metrics, checkpoint_path, metrics_path)
    log.info(
        "%s: test_acc %.4f, %.2f%% left",
        ticket,
        round_metrics["test_accuracy"],
        100 * round_metrics["remaining_fraction"],
    )
    return round_metrics


def _write_round(
    checkpoint: dict[str, Any], metrics: dict[str, Any], checkpoint_path: Path, metrics_path: Path
) -> None:
    """The checkpoint, then the metrics recording its sha256; the in-round files go last."""
    out_dir = checkpoint_path.parent
    atomic_save(checkpoint, checkpoint_path)
    metrics[CHECKPOINT_SHA] = file_sha256(checkpoint_path)
    write_json(metrics, metrics_path, sort_keys=True)
    for leftover in (out_dir / TICKET_FILES.resume, out_dir / TICKET_FILES.rewind):
        leftover.unlink(missing_ok=True)


def _train_round(
    ticket: Ticket,
    data: PreparedData,
    training: TrainingSettings,
    pruning: PruningSettings,
    plan: Plan,
    out_dir: Path,
    fingerprint: dict[str, Any],
) -> TrainState:
    """Train the planned model, resuming only an in-round checkpoint of this very run. A fresh start
    also drops a rewind.pt left by another run (late rewinding captures it again at iteration k)."""
    k = pruning.rewind_iteration
    resume_file, rewind_file = out_dir / TICKET_FILES.resume, out_dir / TICKET_FILES.rewind
    if not keep_resume(resume_file, fingerprint):
        rewind_file.unlink(missing_ok=True)
    captures = rewind_source(ticket, k) == ITERATION_K

    def capture_rewind(iteration: int, model_now: nn.Module) -> None:
        if captures and iteration == k and not rewind_file.exists():
            atomic_save(effective_state(model_now), rewind_file)

    stream = BatchStream(
        *_split(data, TRAIN), training.batch_size, ticket.seed, model_device(plan.model), training.augment
    )
    log.info("%s: training from iteration %d", ticket, plan.start)
    validation = _split(data, VALIDATION)
    try:
        return train(
            plan.model, stream, validation, training, plan.start, resume_file, capture_rewind, fingerprint
        )
    except DivergedError as err:  # train removed resume.pt; the rewind weights come from the same run
        rewind_file.unlink(missing_ok=True)
        raise err.for_key(f"datasets.{ticket.dataset}.training.lr") from None


def _test_metrics(
    model: nn.Module,
    spec: Mapping[str, Any],
    state: TrainState,
    training: TrainingSettings,
    data: PreparedData,
) -> dict[str, Any]:
    """Test loss and accuracy where `training.test_at` asks: after the last step, or with the weights of
    the minimum validation loss (Frankle & Carbin's early-stopping iteration)."""
    test = _split(data, TEST)
    if training.test_at == EARLY_STOP:
        best = model_from_spec(spec)
        best.load_state_dict(state.best_state)
        best.to(model_device(model))
        (loss, accuracy), iteration = (
            evaluate(best, *test),
            early_stop(state.val_curve)["early_stop_iteration"],
        )
    else:
        (loss, accuracy), iteration = evaluate(model, *test), state.iteration
    return {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "test_at": training.test_at,
        "test_iteration": iteration,
    }


def _curve_metrics(state: TrainState, masks: Masks) -> dict[str, Any]:
    remaining, per_layer = sparsity_report(masks)
    return {
        "val_curve": state.val_curve,
        **early_stop(state.val_curve),
        "late_val_gain": late_val_gain(state.val_curve),
        "remaining_fraction": remaining,
        "remaining_per_layer": per_layer,
    }


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


def _rewind_state(
    source: str,
    ticket: Ticket,
    spec: Mapping[str, Any],
    plan: Plan,
    initial: dict[str, torch.Tensor] | None,
    rewind_file: Path,
) -> dict[str, torch.Tensor]:
    """The checkpoint's `rewind_state` from the `rewind_source` of the round."""
    if source == PARENT_REWIND:
        assert plan.parent_rewind is not None
        return plan.parent_rewind
    if source == ITERATION_K:
        return load_torch(rewind_file, "rewind state")
    if source == DENSE_INIT:
        assert initial is not None
        return initial
    return _initial_state(spec, ticket.seed, ticket.branch, ticket.round)


def _initial_state(
    spec: Mapping[str, Any], seed: int, branch: str, round_index: int
) -> dict[str, torch.Tensor]:
    """The re-init control's own fresh init: a scratch draw, also where the study uses ImageNet weights."""
    return _state_copy(seeded_init(_scratch(spec), init_seed(seed, branch, round_index)))


def _scratch(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's architecture with a scratch init (the reinit control's fresh draw)."""
    return {key: value for key, value in spec.items() if key != "model_init"}
