"""TCAV power on the synthbirds known answer: p of the blue-wing concept per class and layer.

Builds the fixture of tests/explanations/test_known_answers.py (same data, model and TCAV settings) with a
chosen set size, and prints the decided TCAV table. Run it under different CPU kernels to see whether the
known answer depends on the processor (docs/benchmarks.md, "TCAV power"):

    python benchmarks/bench_tcav_power.py --set-size 100 --images-per-class 700
    ATEN_CPU_CAPABILITY=default python benchmarks/bench_tcav_power.py --set-size 30 --images-per-class 300
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "explanations")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set-size", type=int, default=100)
    parser.add_argument("--images-per-class", type=int, default=700)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()

    import pandas as pd
    import test_known_answers as ka
    import torch

    from ticketlens.data.concepts import make_concept_set, make_random_sets

    ka.SET_SIZE, ka.IMAGES_PER_CLASS = args.set_size, args.images_per_class
    tcav = dataclasses.replace(ka.TCAV, set_size=args.set_size)
    root = Path(tempfile.mkdtemp(prefix="tcav_power_"))
    clean = ka.prepare(root, 0.0)
    randoms = [root / "sets" / "random_sets.pt", root / "sets" / "calibration_sets.pt"]
    make_random_sets(clean, ka.R, 1, args.set_size, 0, *randoms)
    held_out = root / "sets" / f"random_{ka.R}.pt"
    torch.save(torch.load(randoms[1], weights_only=True)["sets"][0], held_out)
    options = ka.dataset_settings("synthbirds").concept_options
    make_concept_set(clean, "synthbirds", ka.BLUE, args.set_size, options, randoms, root / "sets" / "blue.pt")
    checkpoint, accuracy = ka.train(clean, root / "clean", args.iterations)
    study = {"clean": checkpoint.parent, "data_path": clean, "randoms": randoms[0]}
    start = time.perf_counter()
    summary = ka.run_tcav(study, "clean", [root / "sets" / "blue.pt", held_out], tcav)
    seconds = time.perf_counter() - start
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}; test accuracy {accuracy:.4f}; "
          f"TCAV {seconds:.1f} s for 2 concepts")  # fmt: skip
    columns = ["concept", "layer", "target_class", "mean", "cosine", "null_cosine", "p_value", "p_holm",
               "cav_accuracy", "p_learnable", "significant", "direction"]  # fmt: skip
    with pd.option_context("display.width", 200):
        print(summary[columns].round(4).to_string())
    for layer in (None, ka.LAST_LAYER):
        print(
            layer or "any layer",
            ka.defining_concept_check(summary[summary["concept"] == ka.BLUE], [0, 3], layer),
        )


if __name__ == "__main__":
    main()
