"""TCAV per ticket at CUB scale: what the concept-independent part costs against one concept's test.

On a prepared CUB-shaped dataset (`ticketlens data make-cub-like --images-per-class cub`, then
`ticketlens prepare-dataset`), with a freshly initialised model (the cost does not depend on training):
the ticket base (`tcav.ticket_base`: the random sets' activations, every target class's gradients and their
Gram blocks) and then `--concepts` concept tests of `--set-size` images each (random train images stand in
for attribute crops: the cost does not depend on the pixels). A `tcav_concept` job today recomputes the base
for its one concept, so a ticket's TCAV costs concepts x (base + test); sharing the base costs base +
concepts x test. Peak RSS is the process's (ru_maxrss).

    .venv/bin/python benchmarks/bench_cub_tcav.py --data results/cub/prepared/data.pt [--model resnet18]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from ticketlens.data.prepared import TRAIN, load_prepared
from ticketlens.explanations import tcav
from ticketlens.lottery.models import build_model
from ticketlens.study import TcavSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--concepts", type=int, default=3, help="concept tests timed (then scaled to 112)")
    parser.add_argument("--random", type=int, default=20)
    parser.add_argument("--set-size", type=int, default=100)
    parser.add_argument("--inputs-per-class", type=int, default=10)
    parser.add_argument("--null-draws", type=int, default=1999)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_prepared(args.data)
    model = build_model(
        args.model, data.num_classes, data.in_channels, data.image_size, data.mean, data.std
    ).eval()
    settings = TcavSettings(layers=None, n_random_sets=args.random, set_size=args.set_size,
                            inputs_per_class=args.inputs_per_class, target_classes="all", alpha=0.05,
                            classifier="fastcav", n_counterparts=5, n_null_draws=args.null_draws,
                            n_calibration_sets=0)  # fmt: skip
    train = data.indices(TRAIN).numpy()
    order = np.random.default_rng(0).permutation(train)
    need = (args.random + args.concepts) * args.set_size
    if need > len(order):
        raise SystemExit(f"{args.data}: {len(order)} train images, the sets need {need}")
    sets = [data.float_images(torch.from_numpy(np.sort(order[i * args.set_size : (i + 1) * args.set_size])))
            for i in range(args.random + args.concepts)]  # fmt: skip
    randoms = [(f"random_{i}", images) for i, images in enumerate(sets[: args.random])]
    inputs = tcav.class_inputs(data, args.inputs_per_class, "all")
    layers = list(model.tcav_layers)
    start = time.perf_counter()
    base = tcav.ticket_base(model, 0, layers, randoms, inputs, settings)
    base_s = time.perf_counter() - start
    concept_s = []
    for j, images in enumerate(sets[args.random :]):
        start = time.perf_counter()
        table = tcav.image_set_test(model, base, f"concept_{j}", images, settings)
        concept_s.append(time.perf_counter() - start)
    per_concept = float(np.median(concept_s))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"data: {len(data.labels)} images, {data.num_classes} classes, {data.image_size} px; model {args.model}, "
          f"layers {', '.join(layers)}; {len(inputs[1])} gradient inputs; {args.random} random sets of {args.set_size}")  # fmt: skip
    print(
        f"ticket base: {base_s:.1f} s; one concept's test ({len(table)} rows, N = {args.null_draws}): "
        f"{per_concept:.1f} s (median of {len(concept_s)})"
    )
    for n in (112,):
        print(
            f"{n} concepts: recomputing the base per concept {n * (base_s + per_concept) / 60:.1f} min; "
            f"base shared {(base_s + n * per_concept) / 60:.1f} min"
        )
    print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
