"""Training and evaluation: a lean loop over in-memory uint8 tensors with a seeded data order.

The data order depends only on (seed, epoch), so every round and branch of a replicate sees the same
batches, and a run resumed from an in-round checkpoint continues bitwise identically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ticketlens.fileio import atomic_save, load_torch
from ticketlens.study import TrainingSettings

log = logging.getLogger("ticketlens.training")


@dataclass
class TrainState:
    """What an in-round checkpoint holds besides weights and optimizer."""

    iteration: int
    val_curve: list[dict[str, float]] = field(default_factory=list)


class BatchStream:
    """Endless batches of (float images in [0,1], labels) in a seeded per-epoch order."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.seed = batch_size, seed
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
                yield self.images[index].float().div_(255.0), self.labels[index]
            iteration = (epoch + 1) * self.per_epoch


def make_optimizer(params, config: TrainingSettings) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


@torch.no_grad()
def evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over uint8 images."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        x = images[start : start + batch_size].float().div_(255.0)
        y = labels[start : start + batch_size]
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    return loss_sum / len(labels), correct / len(labels)


def train(
    model: nn.Module,
    stream: BatchStream,
    validation: tuple[torch.Tensor, torch.Tensor],
    config: TrainingSettings,
    start_iteration: int = 0,
    checkpoint_path: Path | None = None,
    on_iteration: Callable[[int, nn.Module], None] | None = None,
) -> TrainState:
    """Train to `config.iterations`, evaluating every `eval_every` and checkpointing every `checkpoint_every`.

    `on_iteration(i, model)` is called before step i (used to save the late-rewinding weights).
    If `checkpoint_path` holds an in-round checkpoint, training resumes from it.
    """
    optimizer = make_optimizer(model.parameters(), config)
    state = TrainState(iteration=start_iteration)
    if checkpoint_path is not None and checkpoint_path.exists():
        state = _resume(model, optimizer, checkpoint_path)
        log.info("resumed from %s at iteration %d", checkpoint_path, state.iteration)
    model.train()
    started, seen = time.perf_counter(), 0
    batches = stream.batches(state.iteration)
    while state.iteration < config.iterations:
        if on_iteration is not None:
            on_iteration(state.iteration, model)
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        state.iteration += 1
        seen += len(y)
        if state.iteration % config.eval_every == 0 or state.iteration == config.iterations:
            val_loss, val_acc = evaluate(model, *validation)
            state.val_curve.append(
                {"iteration": state.iteration, "val_loss": val_loss, "val_accuracy": val_acc}
            )
            rate = seen / (time.perf_counter() - started)
            log.info(
                "iteration %d/%d  val_loss %.4f  val_acc %.4f  %.0f img/s",
                state.iteration,
                config.iterations,
                val_loss,
                val_acc,
                rate,
            )
        if (
            checkpoint_path is not None
            and state.iteration % config.checkpoint_every == 0
            and state.iteration < config.iterations
        ):
            _save_resume(model, optimizer, state, checkpoint_path)
    return state


def _save_resume(model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState, path: Path) -> None:
    atomic_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": state.iteration,
            "val_curve": state.val_curve,
        },
        path,
    )


def _resume(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> TrainState:
    saved = load_torch(path, "in-round checkpoint")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return TrainState(iteration=int(saved["iteration"]), val_curve=list(saved["val_curve"]))


def early_stop(val_curve: list[dict[str, float]]) -> dict[str, float]:
    """The evaluation point with minimum validation loss (Frankle & Carbin's early-stopping criterion)."""
    best = min(val_curve, key=lambda point: point["val_loss"])
    return {"early_stop_iteration": best["iteration"], "early_stop_val_accuracy": best["val_accuracy"]}
