"""Time a dry run (`snakemake -n`) of a CUB-shaped study: job count, wall seconds and peak memory.

Writes params.yaml for a study of S seeds x rounds 0-R x 3 branches x C bird-attribute concepts (ResNet-18,
the CUB folder need not exist) into a fresh folder and runs the repo's Snakefile there, as issue 10 asks:

    python benchmarks/bench_dry_run.py --seeds 5 --rounds 14 --concepts 112 --repeat 3
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ticketlens.config import merge_params

REPO = Path(__file__).resolve().parents[1]
# CUB's colour attributes (has_<part>_color::<value>): 15 parts x 15 colours, more than the 312 limit needs.
CUB_COLOR_PARTS = (
    "bill", "wing", "upperparts", "underparts", "breast", "back", "upper_tail", "under_tail",
    "head", "throat", "eye", "forehead", "nape", "belly", "primary",
)  # fmt: skip
CUB_COLORS = (
    "blue", "brown", "iridescent", "purple", "rufous", "grey", "yellow", "olive", "green", "pink",
    "orange", "black", "white", "red", "buff",
)  # fmt: skip


def cub_concepts(n: int) -> list[str]:
    """The first n colour attributes, part by part."""
    names = [f"has_{part}_color::{color}" for part in CUB_COLOR_PARTS for color in CUB_COLORS]
    if n > len(names):
        raise SystemExit(f"--concepts: at most {len(names)}")
    return names[:n]


def cub_params(seeds: int, rounds: int, concepts: int) -> dict:
    """The CUB-shaped study: pruning rates 0.1, default explanations, ResNet-18."""
    return {
        "study": {
            "datasets": ["cub"],
            "seeds": list(range(seeds)),
            "rounds": rounds,
            "controls": ["reinit", "randmask"],
        },
        "pruning": {"rate_conv": 0.1, "rate_fc": 0.1, "rate_output": 0.1},
        "explanations": {},
        "datasets": {
            "cub": {
                "model": "resnet18",
                "concepts": cub_concepts(concepts),
                "training": {
                    "optimizer": "sgd",
                    "lr": 0.05,
                    "weight_decay": 0.0,
                    "batch_size": 64,
                    "iterations": 4000,
                    "eval_every": 200,
                },
            }
        },
    }


def dry_run(folder: Path) -> tuple[int, float, float]:
    """Jobs, wall seconds and the child's peak resident memory in GB (ru_maxrss: the largest child so far,
    so each run goes in a fresh process, see `main`)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(folder)]
    command += ["-n", "--cores", "2", "--quiet", "rules"]  # rules: no per-job lines, but the job stats
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dry run failed:\n{done.stdout}\n{done.stderr}")
    # The job stats table ends with `total <count>`.
    match = re.search(r"^total\s+(\d+)", done.stdout + done.stderr, re.MULTILINE)
    jobs = int(match[1]) if match else -1
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    return jobs, wall, peak_gb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=14, help="pruning rounds after the dense round 0")
    parser.add_argument("--concepts", type=int, default=112)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="folder for params.yaml (default: a fresh temp folder)")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one run, for `main`
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="ticketlens-dry-"))
    folder.mkdir(parents=True, exist_ok=True)
    params = merge_params(
        yaml.safe_load((REPO / "params.yaml").read_text()), cub_params(args.seeds, args.rounds, args.concepts)
    )
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if args.once:
        jobs, wall, peak = dry_run(folder)
        print(f"{jobs}\t{wall:.1f}\t{peak:.2f}")
        return
    print(f"{folder}/params.yaml: {args.seeds} seeds x {args.rounds} rounds x {args.concepts} concepts")
    for run in range(1, args.repeat + 1):
        # RUSAGE_CHILDREN keeps the maximum over all children: measure each run in its own process.
        shape = [f"--seeds={args.seeds}", f"--rounds={args.rounds}", f"--concepts={args.concepts}"]
        command = [sys.executable, __file__, "--once", "--dir", str(folder), *shape]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        jobs, wall, peak = output.split()
        print(f"run {run}: {jobs} jobs, {wall} s wall, {peak} GB peak")


if __name__ == "__main__":
    main()
