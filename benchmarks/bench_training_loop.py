"""Training-loop overhead: images/s of ticketlens.lottery.training.train vs a bare PyTorch loop.

Both run on the same pruned model (torch.nn.utils.prune masks installed), the same batch size and the
same data, interleaved in one process so machine noise hits both alike. Target ratio >= 0.9.

    python benchmarks/bench_training_loop.py [--model convnet_mnist] [--data results/mnist/prepared/data.pt]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ticketlens.data.prepared import TRAIN, load_prepared
from ticketlens.lottery.models import build_model
from ticketlens.lottery.pruning import PruningRates, full_masks, install_masks, magnitude_prune
from ticketlens.lottery.training import BatchStream, make_optimizer, train
from ticketlens.study import TrainingSettings


def load_images(path: str | None, n: int) -> tuple[torch.Tensor, torch.Tensor, list[float], list[float]]:
    if path and Path(path).exists():
        data = load_prepared(Path(path))
        index = data.indices(TRAIN)[:n]
        return data.images[index], data.labels[index], data.mean, data.std
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator),
        torch.randint(0, 10, (n,), generator=generator),
        [0.13],
        [0.31],
    )


def pruned_model(name: str, mean: list[float], std: list[float], channels: int, size: int):
    torch.manual_seed(0)
    model = build_model(name, 10, channels, size, mean, std)
    masks = magnitude_prune(model, full_masks(model), PruningRates(0.2, 0.2, 0.1), "layerwise")
    install_masks(model, masks)
    return model


def bare_loop(model, images, labels, config: TrainingSettings) -> float:
    """The textbook loop: shuffled uint8 batches, float conversion, forward, backward, step."""
    optimizer = make_optimizer(model.parameters(), config)
    model.train()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    per_epoch = len(labels) // config.batch_size
    started = time.perf_counter()
    for i in range(config.iterations):
        index = order[(i % per_epoch) * config.batch_size : (i % per_epoch + 1) * config.batch_size]
        x, y = images[index].float().div_(255.0), labels[index]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return config.iterations * config.batch_size / (time.perf_counter() - started)


def ticketlens_loop(model, images, labels, config: TrainingSettings) -> float:
    # eval_every = iterations: one validation pass on a tiny set, as rare as in a real run per step.
    validation = (images[:64], labels[:64])
    started = time.perf_counter()
    train(model, BatchStream(images, labels, config.batch_size, seed=0), validation, config)
    return config.iterations * config.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convnet_mnist")
    parser.add_argument("--data", default="results/mnist/prepared/data.pt")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels, mean, std = load_images(args.data, 12_000)
    config = TrainingSettings(
        optimizer="adam",
        lr=1e-3,
        momentum=0.9,  # unused by adam
        weight_decay=0.0,
        batch_size=args.batch_size,
        iterations=args.iterations,
        eval_every=args.iterations,
        checkpoint_every=args.iterations,  # no checkpoint path: never written
        init="default",
        test_at="end",
        lr_schedule="constant",
    )
    shape = images.shape
    bare, ours = [], []
    for _ in range(args.repeats):  # interleaved so drift affects both
        bare.append(
            bare_loop(pruned_model(args.model, mean, std, shape[1], shape[-1]), images, labels, config)
        )
        ours.append(
            ticketlens_loop(pruned_model(args.model, mean, std, shape[1], shape[-1]), images, labels, config)
        )
    b, o = statistics.median(bare), statistics.median(ours)
    print(
        f"model {args.model}, batch {args.batch_size}, {args.iterations} iterations x {args.repeats} repeats, "
        f"{args.threads} thread(s), data {tuple(shape)}"
    )
    print(f"bare PyTorch loop : {b:8.0f} img/s (median; runs {', '.join(f'{v:.0f}' for v in bare)})")
    print(f"ticketlens.train  : {o:8.0f} img/s (median; runs {', '.join(f'{v:.0f}' for v in ours)})")
    print(f"ratio ticketlens / bare = {o / b:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
