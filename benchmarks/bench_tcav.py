"""TCAV for C concepts x R random sets on one ticket: our cached path vs the straightforward captum loop.

Ours: the random-set activations and the class-input gradients are computed once per ticket (the
tcav_null step's cache), then each concept costs one forward pass and R classifier fits. The baseline:
one `captum.concept.TCAV` per concept with a fresh save path, `interpret` once per class, which
recomputes the random-set activations for every concept and the gradients for every concept and class.
Both use the same seeded classifier, so the scores must be identical; the script checks that.

    .venv/bin/python benchmarks/bench_tcav.py [--concepts 4] [--random 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import captum_reference  # the captum loop (benchmarks/captum_reference.py)
from ticketlens.data.prepared import PreparedData, channel_stats, save_prepared
from ticketlens.explanations import tcav
from ticketlens.lottery import load_model, train_ticket
from ticketlens.study import TICKET_FILES, PruningSettings, Ticket, TrainingSettings


def synthetic_data(classes: int, per_class: int, size: int, seed: int = 0) -> PreparedData:
    """Noise images with a class-coloured square at a class-specific place: learnable in seconds."""
    g = torch.Generator().manual_seed(seed)
    n = classes * per_class
    labels = torch.arange(n) % classes
    images = (torch.rand(n, 3, size, size, generator=g) * 90).to(torch.uint8)
    side = size // 4
    for c in range(classes):
        row, col = divmod(c, 4)
        colour = torch.tensor([(c * 80) % 256, (c * 150 + 60) % 256, (c * 40 + 200) % 256], dtype=torch.uint8)
        images[labels == c, :, row * side : (row + 1) * side, col * side : (col + 1) * side] = colour.view(
            3, 1, 1
        )
    split = torch.zeros(n, dtype=torch.int8)
    split[int(0.7 * n) : int(0.8 * n)] = 1
    split[int(0.8 * n) :] = 2
    mean, std = channel_stats(images[split == 0])
    return PreparedData("bench", images, labels, split, [f"class{c}" for c in range(classes)], mean, std)


MODEL, MODEL_WIDTH = "conv4", 0.25
TRAINING = TrainingSettings(optimizer="adam", lr=0.002, momentum=0.9, weight_decay=0.0, batch_size=64,
                            iterations=150, eval_every=50, checkpoint_every=500,
                            test_at="end", init="default")  # fmt: skip
PRUNING = PruningSettings(scope="global", rate_conv=0.4, rate_fc=0.5, rate_output=0.25, exclude=(),
                          one_shot=False, rewind_iteration=0)  # fmt: skip


FIT_SECONDS = [0.0]


def timed_classifiers() -> None:
    """Count the time spent in CAV fits: the same seeded classifier runs in both paths."""
    plain = tcav.make_classifier

    def make() -> object:
        classifier = plain()
        fit = classifier.train_and_eval

        def timed(*args: object, **kwargs: object) -> dict:
            started = time.perf_counter()
            try:
                return fit(*args, **kwargs)
            finally:
                FIT_SECONDS[0] += time.perf_counter() - started

        classifier.train_and_eval = timed
        return classifier

    tcav.make_classifier = make
    captum_reference.make_classifier = make  # it imported the name: patch its binding too


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=4)
    parser.add_argument("--random", type=int, default=10)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--set-size", type=int, default=30)
    parser.add_argument("--inputs-per-class", type=int, default=20)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each path (medians reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    timed_classifiers()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = synthetic_data(args.classes, 120, args.size)
        save_prepared(data, root / "data.pt")
        train_ticket(
            Ticket("bench", 0, "ticket", 0),
            root / "data.pt",
            MODEL,
            MODEL_WIDTH,
            TRAINING,
            PRUNING,
            root / "r0",
            threads=args.threads,
        )
        model = load_model(root / "r0" / TICKET_FILES.checkpoint)
        layers = list(model.tcav_layers)

        train = data.indices(0).numpy()
        rng = np.random.default_rng(0)
        pool = rng.permutation(train)
        size = args.set_size
        randoms = [
            (f"random_{i}", data.float_images(torch.from_numpy(pool[i * size : (i + 1) * size])))
            for i in range(args.random)
        ]
        labels = data.labels.numpy()
        concepts = [
            (f"class{c}_images", data.float_images(torch.from_numpy(train[labels[train] == c][:size])))
            for c in range(args.concepts)
        ]
        test = data.indices(2).numpy()
        inputs = {k: data.float_images(torch.from_numpy(test[labels[test] == k][: args.inputs_per_class]))
                  for k in range(args.classes)}  # fmt: skip

        class_inputs = {k: (np.arange(len(x)), x) for k, x in inputs.items()}

        def ours_once() -> tuple[list, float]:
            started = time.perf_counter()
            cache = tcav.build_cache(model, layers, randoms, class_inputs)
            seconds = time.perf_counter() - started
            rows = [
                tcav.concept_rows(name, tcav.layer_activations(model, layers, images), cache)
                for name, images in concepts
            ]
            return rows, seconds

        # alternate the two paths so load from other processes hits both alike; report medians
        timings: dict[str, list[float]] = {
            "ours": [],
            "captum": [],
            "ours_fit": [],
            "captum_fit": [],
            "cache": [],
        }
        for repeat in range(args.repeat):
            FIT_SECONDS[0] = 0.0
            started = time.perf_counter()
            ours, cache_seconds = ours_once()
            timings["ours"].append(time.perf_counter() - started)
            timings["cache"].append(cache_seconds)
            timings["ours_fit"].append(FIT_SECONDS[0])
            FIT_SECONDS[0] = 0.0
            started = time.perf_counter()
            theirs = captum_reference.captum_tcav_rows(
                model, layers, concepts, randoms, inputs, root / f"captum_{repeat}"
            )
            timings["captum"].append(time.perf_counter() - started)
            timings["captum_fit"].append(FIT_SECONDS[0])
        median = {key: float(np.median(values)) for key, values in timings.items()}
        ours_seconds, captum_seconds = median["ours"], median["captum"]
        ours_fit, captum_fit, cache_seconds = median["ours_fit"], median["captum_fit"], median["cache"]

    import pandas as pd

    keys = ["concept", "layer", "target_class", "random_set"]
    merged = pd.concat(ours).merge(theirs, on=keys, suffixes=("_ours", "_captum"))
    identical = len(merged) == len(theirs) and (merged["score_ours"] == merged["score_captum"]).all()
    max_diff = float((merged["score_ours"] - merged["score_captum"]).abs().max())
    print(f"TCAV: {args.concepts} concepts x {args.random} random sets x {len(layers)} layers x {args.classes} classes "
          f"({len(merged)} scores), set size {size}, {args.inputs_per_class} inputs/class, "
          f"{args.threads} thread(s), conv4 width 0.25 at {args.size}px, median of {args.repeat} runs")  # fmt: skip
    print(
        f"  cached path : {ours_seconds:8.2f} s  (cache {cache_seconds:.2f} s once per ticket; CAV fits {ours_fit:.2f} s)"
    )
    print(f"  captum loop : {captum_seconds:8.2f} s  (CAV fits {captum_fit:.2f} s)")
    print(f"  ratio       : {captum_seconds / ours_seconds:8.2f}x  (captum loop / cached path)")
    other = (captum_seconds - captum_fit) / max(ours_seconds - ours_fit, 1e-9)
    print(f"  ratio without the shared CAV fits: {other:.2f}x (activations, gradients, captum's disk cache)")
    print(f"  scores identical: {identical} (max |diff| {max_diff:.3g}); CAV accuracies identical: "
          f"{bool((merged['cav_accuracy_ours'] == merged['cav_accuracy_captum']).all())}")  # fmt: skip
    if not identical:
        raise SystemExit("scores differ between the cached path and the captum loop")


if __name__ == "__main__":
    main()
