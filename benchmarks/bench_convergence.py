"""Is the demo's dense training converged? Test accuracy of round 0 over seeds for a training override.

Trains `{dataset}/seed_{s}/ticket/round_0` through `ticketlens train-ticket` (the study's own command,
model, data and kernels) for each seed, two jobs at a time, into --out, and prints the accuracies, their
mean and seed-to-seed standard deviation (issue 20's target: <= 0.5 points). Needs the prepared data:
`snakemake --cores 1 results/synthbirds/prepared/data.pt`. Environment variables pass through, so kernel
choices can be compared (docs/benchmarks.md, "Converged default study"):

    python benchmarks/bench_convergence.py synthbirds '{"iterations": 800, "batch_size": 64}'
    TICKETLENS_KERNELS=native ATEN_CPU_CAPABILITY=default python benchmarks/bench_convergence.py synthbirds '{}' --seeds 1 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def train_dense(dataset: str, seed: int, params: dict, training: dict, out: Path) -> float:
    settings = params["datasets"][dataset]
    folder = out / dataset / f"seed_{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    command = ["ticketlens", "train-ticket", "--ticket", f"{dataset}/seed_{seed}/ticket/round_0",
               "--data", str(ROOT / "results" / dataset / "prepared" / "data.pt"),
               "--model", settings["model"], "--model-width", str(settings["model_width"]),
               "--training", json.dumps(training), "--pruning", json.dumps(params["pruning"]),
               "--checkpoint", str(folder / "checkpoint.pt"), "--metrics", str(folder / "metrics.json"),
               "--threads", "1", "--device", "cpu"]  # fmt: skip
    env = {"TICKETLENS_KERNELS": params["study"]["kernels"], **os.environ}
    subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True)
    return json.loads((folder / "metrics.json").read_text())["test_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("override", help="JSON object merged over params.yaml's training section")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--out", type=Path, default=None, help="default: a fresh temporary folder")
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    training = {**params["datasets"][args.dataset]["training"], **json.loads(args.override)}
    out = args.out or Path(tempfile.mkdtemp(prefix="convergence_"))
    with ThreadPoolExecutor(2) as pool:
        accuracies = list(pool.map(lambda s: train_dense(args.dataset, s, params, training, out), args.seeds))
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else float("nan")
    print(f"{args.dataset} {json.loads(args.override)}: "
          + " / ".join(f"{100 * a:.2f}" for a in accuracies)
          + f"; mean {100 * statistics.mean(accuracies):.2f}, sd {100 * spread:.2f} points")  # fmt: skip


if __name__ == "__main__":
    main()
