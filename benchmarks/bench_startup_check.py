"""Time the Snakefile's start-up check (`ticketlens.runtime.startup.check_results`) on a synthetic results tree.

Builds N ticket folders with checkpoint.pt files of a given size and consistent metrics.json, then times the
check with a cold hash cache (every checkpoint hashed), a warm one (a no-op re-run) and after one checkpoint
was replaced with `cp -p` semantics (only that file is hashed again).

    python benchmarks/bench_startup_check.py --seeds 5 --rounds 15 --megabytes 40
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ticketlens.fileio import file_sha256
from ticketlens.runtime.startup import check_results
from ticketlens.study import PruningSettings, StudyParams, StudySettings


def build_tree(root: Path, params: StudyParams, megabytes: float) -> int:
    """Checkpoints of random bytes and metrics.json files that record their hashes, parents first."""
    size = int(megabytes * 2**20)
    recorded = {}
    for ticket in params.study.tickets("bench"):
        folder = root / ticket.folder
        folder.mkdir(parents=True)
        checkpoint = folder / "checkpoint.pt"
        checkpoint.write_bytes(os.urandom(size))
        parent = ticket.parent(params.pruning.one_shot)
        recorded[ticket] = file_sha256(checkpoint)
        metrics = {
            "dataset": ticket.dataset,
            "seed": ticket.seed,
            "branch": ticket.branch,
            "round": ticket.round,
            "checkpoint_sha256": recorded[ticket],
            "parent_sha256": recorded[parent] if parent else None,
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return len(recorded)


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--megabytes", type=float, default=40.0, help="size of each checkpoint")
    args = parser.parse_args()
    study = StudySettings(datasets=("bench",), seeds=tuple(range(args.seeds)), rounds=args.rounds,
                          controls=("reinit", "randmask"), threads=1, kernels="reproducible", max_jobs=10**6,
                          device="auto")  # fmt: skip
    pruning = PruningSettings("global", 0.2, 0.2, 0.1, (), False, 0)
    params = StudyParams(study, pruning, None, {})  # type: ignore[arg-type]
    root = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    try:
        n = build_tree(root, params, args.megabytes)
        cache = root / ".snakemake" / "hashes.json"
        cold = timed(lambda: check_results(params, root, cache))
        warm = timed(lambda: check_results(params, root, cache))
        one = next(iter(root.glob("results/bench/seed_0/ticket/round_1/checkpoint.pt")))
        stat = one.stat()
        one.write_bytes(one.read_bytes())  # same bytes, new ctime: the cache must hash it again
        os.utime(one, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        touched = timed(lambda: check_results(params, root, cache))
        total = n * args.megabytes / 1024
        print(f"{n} checkpoints of {args.megabytes:g} MB ({total:.1f} GB)")
        print(f"cold cache: {cold:.2f} s   warm cache: {warm * 1000:.1f} ms   one replaced: {touched:.2f} s")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
