"""Training and evaluation: a lean loop over in-memory uint8 tensors with a seeded data order.

The data order depends only on (seed, epoch) and the augmentation only on (seed, iteration), so every
round and branch of a replicate sees the same batches, and a run resumed from an in-round checkpoint
continues bitwise identically. The model computes on its own device (`device.model_device`); the data stay
in host memory and move batch by batch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ticketlens.device import autocast, host, model_device, to_device, use_channels_last
from ticketlens.errors import UserError
from ticketlens.fileio import atomic_save, load_torch
from ticketlens.lottery.augment import AUGMENTS, crop_flip
from ticketlens.study import TrainingSettings

log = logging.getLogger("ticketlens.lottery.training")

END, EARLY_STOP = "end", "early_stop"  # training.test_at
CONSTANT, COSINE = "constant", "cosine"  # training.lr_schedule


class DivergedError(UserError):
    """The loss became nan or inf: nothing of the run may be kept or resumed.

    `lr_key` names the params key to lower; `rounds.train_ticket` re-raises with the dataset's own key.
    """

    def __init__(
        self, iteration: int, what: str, value: float, lr: float, lr_key: str = "training.lr"
    ) -> None:
        self.iteration, self.what, self.value, self.lr = iteration, what, value, lr
        super().__init__(
            f"training diverged at iteration {iteration}: {what} {value} "
            f"(allowed: a finite loss at every step; lower {lr_key}, now {lr:g})"
        )

    def for_key(self, lr_key: str) -> DivergedError:
        return DivergedError(self.iteration, self.what, self.value, self.lr, lr_key)


@dataclass
class TrainState:
    """What an in-round checkpoint holds besides weights and optimizer.

    `best_state` is the effective state at the minimum validation loss so far (kept only when the test
    accuracy is taken at the early-stop iteration), `best_val_loss` that loss.
    """

    iteration: int
    val_curve: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    best_val_loss: float = math.inf


class BatchStream:
    """Endless batches of (float images in [0,1], labels) on `device` in a seeded per-epoch order.

    The uint8 batch is indexed in host memory and moved to the device (`device.to_device`), where it is
    converted (and augmented: `training.augment`, drawn from (seed, iteration)). `device` None: where the
    images are."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device | None = None,
        augment: str = "none",
    ) -> None:
        if augment not in AUGMENTS:
            raise UserError(f"training.augment: got '{augment}' (allowed: {', '.join(AUGMENTS)})")
        self.images, self.labels = images, labels
        self.batch_size, self.seed = batch_size, seed
        self.device = images.device if device is None else device
        self.augment = augment
        self.per_epoch = max(1, len(labels) // batch_size)  # drop the last partial batch

    def _order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(len(self.labels), generator=generator)

    def batches(self, start_iteration: int):
        iteration = start_iteration
        while True:
            epoch, step = divmod(iteration, self.per_epoch)
            order = self._order(epoch)
            for s in range(step, self.per_epoch):
                index = order[s * self.batch_size : (s + 1) * self.batch_size]
                images = to_device(self.images[index], self.device)
                labels = to_device(self.labels[index], self.device)
                if self.augment == "crop_flip":
                    yield crop_flip(images, self.seed, epoch * self.per_epoch + s), labels
                else:
                    yield images.float().div_(255.0), labels
            iteration = (epoch + 1) * self.per_epoch


def learning_rate(config: TrainingSettings, iteration: int) -> float:
    """The step size of step `iteration` (0-based): `lr` throughout (`constant`), or half a cosine from `lr`
    at step 0 down to 0 after the last step (`cosine`), so a round ends with small steps on a plateau.
    It depends on the step only: a round resumed, or a ticket trained from the rewind step k, takes the
    same step sizes as an uninterrupted run."""
    if config.lr_schedule == CONSTANT:
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * iteration / config.iterations))


def _set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(params, config: TrainingSettings) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> torch.Tensor:
    """The mean cross-entropy of one batch, the forward pass under `training.precision`'s autocast."""
    with autocast(x.device, precision):
        return F.cross_entropy(model(x), y)


@torch.no_grad()
def evaluation_totals(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy in float64, number correct) over uint8 host images, on the model's device.
    Batches move to the device one by one; the sums stay there until the caller reads them once."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(labels), batch_size):
        x = to_device(images[start : start + batch_size], device).float().div_(255.0)
        y = to_device(labels[start : start + batch_size], device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    return loss_sum, correct


def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over uint8 images (fp32, on the model's device)."""
    loss_sum, correct = evaluation_totals(model, images, labels, batch_size)
    return loss_sum.item() / len(labels), int(correct.item()) / len(labels)


def train(
    model: nn.Module,
    stream: BatchStream,
    validation: tuple[torch.Tensor, torch.Tensor],
    config: TrainingSettings,
    start_iteration: int = 0,
    checkpoint_path: Path | None = None,
    on_iteration: Callable[[int, nn.Module], None] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
) -> TrainState:
    """Train to `config.iterations`, evaluating every `eval_every` and checkpointing every `checkpoint_every`.

    `on_iteration(i, model)` is called before step i (used to save the late-rewinding weights).
    If `checkpoint_path` holds an in-round checkpoint saved with the same `fingerprint` (everything that
    determines the run), training resumes from it; one saved for anything else is discarded.
    A nan or inf training loss (checked at every step) or validation loss raises `DivergedError` and
    deletes `checkpoint_path`: its weights lead to the divergence, resuming them would repeat it.
    """
    channels_last = use_channels_last(config.channels_last, model_device(model))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), config)
    state = TrainState(iteration=start_iteration)
    if checkpoint_path is not None and keep_resume(checkpoint_path, fingerprint):
        state = _resume(model, optimizer, checkpoint_path)
        log.info("resumed from %s at iteration %d", checkpoint_path, state.iteration)
    model.train()
    started, seen = time.perf_counter(), 0
    batches = stream.batches(state.iteration)
    while state.iteration < config.iterations:
        if on_iteration is not None:
            on_iteration(state.iteration, model)
        x, y = next(batches)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, x, y, config.precision)
        if not math.isfinite(value := loss.item()):
            raise _diverged(state.iteration + 1, "loss", value, config, checkpoint_path)
        loss.backward()
        _set_learning_rate(optimizer, learning_rate(config, state.iteration))
        optimizer.step()
        state.iteration += 1
        seen += len(y)
        if state.iteration % config.eval_every == 0 or state.iteration == config.iterations:
            _evaluate_point(model, validation, config, state, checkpoint_path)
            log.info(
                "iteration %d/%d  val_loss %.4f  val_acc %.4f  %.0f img/s",
                state.iteration,
                config.iterations,
                state.val_curve[-1]["val_loss"],
                state.val_curve[-1]["val_accuracy"],
                seen / (time.perf_counter() - started),
            )
        if (
            checkpoint_path is not None
            and state.iteration % config.checkpoint_every == 0
            and state.iteration < config.iterations
        ):
            _save_resume(model, optimizer, state, checkpoint_path, fingerprint)
    return state


def _evaluate_point(
    model: nn.Module,
    validation: tuple[torch.Tensor, torch.Tensor],
    config: TrainingSettings,
    state: TrainState,
    checkpoint_path: Path | None,
) -> None:
    """Append a validation point; keep the weights of a new minimum when the test is taken there."""
    val_loss, val_acc = evaluate(model, *validation)
    if not math.isfinite(val_loss):
        raise _diverged(state.iteration, "validation loss", val_loss, config, checkpoint_path)
    state.val_curve.append({"iteration": state.iteration, "val_loss": val_loss, "val_accuracy": val_acc})
    # strictly lower: the first minimum, as `early_stop` picks it
    if config.test_at == EARLY_STOP and val_loss < state.best_val_loss:
        state.best_state, state.best_val_loss = effective_state(model), val_loss


def effective_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as a plain model would have it (weight = weight_orig * mask), without pruning buffers,
    in host memory (what checkpoints and rewind files hold, whatever the training device)."""
    current = model.state_dict()
    state = {}
    for key, value in current.items():
        if key.endswith("_mask"):
            continue
        if key.endswith("weight_orig"):
            base = key.removesuffix("_orig")
            state[base] = host(value * current[base + "_mask"]).clone()
        else:
            state[key] = host(value).clone()
    return state


def _diverged(
    iteration: int, what: str, value: float, config: TrainingSettings, checkpoint_path: Path | None
) -> DivergedError:
    if checkpoint_path is not None:
        checkpoint_path.unlink(missing_ok=True)
    return DivergedError(iteration, what, value, config.lr)


def _fingerprint_text(fingerprint: Mapping[str, Any] | None) -> str:
    return json.dumps(fingerprint or {}, sort_keys=True)


def _save_resume(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    path: Path,
    fingerprint: Mapping[str, Any] | None,
) -> None:
    atomic_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": state.iteration,
            "val_curve": state.val_curve,
            "best_state": state.best_state,
            "best_val_loss": state.best_val_loss,
            "fingerprint": _fingerprint_text(fingerprint),
        },
        path,
    )


def keep_resume(path: Path, fingerprint: Mapping[str, Any] | None) -> bool:
    """Whether `path` holds an in-round checkpoint of exactly this run. One saved for other settings,
    another parent or other data is deleted with a log line saying what differs: resuming it would
    silently mix two runs (its optimizer state even carries the old learning rate)."""
    if not path.exists():
        return False
    saved = load_torch(path, "in-round checkpoint")
    stored = saved.get("fingerprint") if isinstance(saved, dict) else None
    if stored == _fingerprint_text(fingerprint):
        return True
    why = (
        "it records no fingerprint" if stored is None else _differences(json.loads(stored), fingerprint or {})
    )
    log.info("discarding %s: saved for another run (%s); training from the start", path, why)
    path.unlink()
    return False


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """`training.lr 0.003 -> 0.01, parent_sha256 ab12.. -> cd34..`: the leaves that differ."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    changed = [
        f"{key} {flat_old.get(key)} -> {flat_new.get(key)}"
        for key in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(key) != flat_new.get(key)
    ]
    return ", ".join(changed) or "same values, other format"


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> TrainState:
    saved = load_torch(path, "in-round checkpoint")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return TrainState(
        iteration=int(saved["iteration"]),
        val_curve=list(saved["val_curve"]),
        best_state=saved["best_state"],
        best_val_loss=float(saved["best_val_loss"]),
    )


def early_stop(val_curve: list[dict[str, float]]) -> dict[str, float]:
    """The evaluation point with minimum validation loss (Frankle & Carbin's early-stopping criterion)."""
    best = min(val_curve, key=lambda point: point["val_loss"])
    return {"early_stop_iteration": best["iteration"], "early_stop_val_accuracy": best["val_accuracy"]}


LATE_FRACTION = 0.25  # "on a plateau": what the last quarter of a round's iterations still gained


def late_val_gain(val_curve: list[dict[str, float]]) -> float:
    """Validation accuracy at the last evaluation minus at the last one at or before 75% of the round's
    final iteration: about 0 for a net trained to a plateau, large for one stopped while still climbing
    (the issue-20 symptom: 51%, 75%, 80%, 95% at iterations 100-400). NaN with fewer than two evaluations."""
    if len(val_curve) < 2:
        return float("nan")
    last = val_curve[-1]
    cut = (1.0 - LATE_FRACTION) * last["iteration"]
    earlier = [point for point in val_curve[:-1] if point["iteration"] <= cut] or val_curve[:1]
    return float(last["val_accuracy"] - earlier[-1]["val_accuracy"])
