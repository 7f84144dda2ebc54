"""TCAV per ticket, one protocol, side by side: captum's plain TCAV loop against ticketlens's batched engine.

Protocol (the reference TCAV experiment): C concepts x R random sets x layers x classes; every concept gets
one CAV against each random set per layer, and a TCAV score per class from each CAV.

* captum loop: one `captum.concept.TCAV` per concept (fresh save path), `interpret` once per class, with
  the seeded scikit-learn SGD classifier (`benchmarks/captum_reference.py`).
* ours: the ticket's random-set activations and class gradients once (`tcav.ticket_base`), then per concept
  its activations and all R x layers fits in one batched call (`cav.fit_rows`), per classifier: sgd (the
  same captum classifier, through our engine), logistic, fastcav.

Reported: seconds (median of --repeat runs), the ratio captum loop / ours, and agreement with the SGD
reference: of the C x R x layers x classes TCAV scores (mean |difference|, Spearman rho, how often both
are on the same side of 0.5), and with --decisions of the calibrated test's decisions (p <= alpha, before
correction, at --null-draws draws; sgd fits are slow, so keep that small). Also the time of the full
calibrated test of one concept (N = 1999 draws x K = 5 fits per layer) with the fastest classifier.

    .venv/bin/python benchmarks/bench_tcav.py [--concepts 4] [--random 20] [--threads 1] [--decisions]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import captum_reference  # the captum loop (benchmarks/captum_reference.py)
from ticketlens.data.prepared import PreparedData, channel_stats, save_prepared
from ticketlens.explanations import tcav
from ticketlens.explanations.cav import class_scores, fit_rows
from ticketlens.explanations.sgd_reference import CAV_SEED
from ticketlens.explanations.tcav_significance import TicketBase, concept_test
from ticketlens.lottery.rounds import load_model, train_ticket
from ticketlens.study import TICKET_FILES, PruningSettings, TcavSettings, Ticket, TrainingSettings

MODEL, MODEL_WIDTH = "conv4", 0.25
TRAINING = TrainingSettings(optimizer="adam", lr=0.002, momentum=0.9, weight_decay=0.0, batch_size=64,
                            iterations=150, eval_every=50, checkpoint_every=500,
                            test_at="end", init="default", model_init="scratch", weights_file=None,
                            augment="none", precision="fp32", channels_last=None,
                            lr_schedule="constant")  # fmt: skip
PRUNING = PruningSettings(scope="global", rate_conv=0.4, rate_fc=0.5, rate_output=0.25, exclude=(),
                          one_shot=False, rewind_iteration=0)  # fmt: skip
CLASSIFIERS = ("sgd", "logistic", "fastcav")
KEYS = ["concept", "layer", "target_class", "random_set"]


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


def image_sets(data: PreparedData, args: argparse.Namespace) -> tuple[list, list, dict]:
    """R disjoint random sets and C concepts (each: images of one class) from train; inputs from test."""
    train = data.indices(0).numpy()
    labels = data.labels.numpy()
    pool = np.random.default_rng(0).permutation(train)
    size = args.set_size
    randoms = [(f"random_{i}", data.float_images(torch.from_numpy(pool[i * size : (i + 1) * size])))
               for i in range(args.random)]  # fmt: skip
    rest = pool[args.random * size :]
    concepts = [(f"class{c}_images", data.float_images(torch.from_numpy(rest[labels[rest] == c][:size])))
                for c in range(args.concepts)]  # fmt: skip
    test = data.indices(2).numpy()
    inputs = {k: data.float_images(torch.from_numpy(test[labels[test] == k][: args.inputs_per_class]))
              for k in range(args.classes)}  # fmt: skip
    return randoms, concepts, inputs


def settings(args: argparse.Namespace, classifier: str, n_null: int) -> TcavSettings:
    return TcavSettings(layers=None, n_random_sets=args.random, set_size=args.set_size,
                        inputs_per_class=args.inputs_per_class, target_classes="all", alpha=0.05, classifier=classifier,
                        n_counterparts=5, n_null_draws=n_null, n_calibration_sets=0)  # fmt: skip


def ticket(model: torch.nn.Module, randoms: list, inputs: dict, tcav_settings: TcavSettings) -> TicketBase:
    """Our per-ticket evidence. All R random sets are the counterparts here: the reference protocol has
    no pool (the calibrated test's base is built with the study's K in `calibrated_test`)."""
    images = torch.cat([inputs[k] for k in sorted(inputs)])
    labels = torch.cat([torch.full((len(inputs[k]),), k) for k in sorted(inputs)])
    protocol = TcavSettings(**{**tcav_settings.to_dict(), "n_counterparts": len(randoms) - 1})
    base = tcav.ticket_base(model, 0, list(model.tcav_layers), randoms, (images, labels), protocol)
    # every random set is a counterpart: the last one too (ticket_base keeps one for the pool)
    return TicketBase(base.ticket_seed, base.layers, [name for name, _ in randoms], base.set_size, 0,
                      base.input_classes, base.classes)  # fmt: skip


def ours_protocol(model: torch.nn.Module, randoms: list, concepts: list, inputs: dict, classifier: str,
                  args: argparse.Namespace, seed: int = CAV_SEED) -> pd.DataFrame:  # fmt: skip
    """The protocol through our engine: per concept and layer, one batched fit of the concept vs R sets."""
    base = ticket(model, randoms, inputs, settings(args, classifier, 1))
    records = []
    for name, images in concepts:
        activations = tcav.layer_activations(model, list(base.layers), images)
        for layer, layer_base in base.layers.items():
            rows = layer_base.with_concept(activations[layer])
            count, size = len(randoms), base.set_size
            positive = torch.arange(count * size, count * size + len(images)).expand(count, -1)
            negative = torch.arange(count * size).view(count, size)
            fit = fit_rows(rows, positive, negative, classifier, [seed] * count)
            scores = class_scores(fit.derivatives, base.input_classes, base.classes)
            records += [(name, layer, k, random_name, float(scores[i, k]), float(fit.accuracy[i]))
                        for i, (random_name, _) in enumerate(randoms) for k in base.classes]  # fmt: skip
    return pd.DataFrame(records, columns=[*KEYS, "score", "cav_accuracy"])


def timed(run: Callable[[], pd.DataFrame], repeat: int) -> tuple[pd.DataFrame, float]:
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    return result, statistics.median(seconds)


def score_agreement(ours: pd.DataFrame, reference: pd.DataFrame) -> dict[str, float]:
    """Per CAV (concept, layer, class, random set) and per TCAV result (the mean over the R random sets)."""
    merged = ours.merge(reference, on=KEYS, suffixes=("", "_ref"))
    means = merged.groupby(KEYS[:-1])[["score", "score_ref"]].mean()
    out = {}
    for level, table in (("cav", merged), ("mean", means)):
        same_side = np.sign(table["score"] - 0.5) == np.sign(table["score_ref"] - 0.5)
        out[f"{level}_abs_diff"] = float((table["score"] - table["score_ref"]).abs().mean())
        out[f"{level}_spearman"] = float(table["score"].rank().corr(table["score_ref"].rank()))
        out[f"{level}_same_side"] = float(same_side.mean())
    return out


def agreement_text(agree: dict[str, float]) -> str:
    return " | ".join(
        f"{level}: |diff| {agree[f'{level}_abs_diff']:.3f}, rho {agree[f'{level}_spearman']:.3f}, "
        f"same side {100 * agree[f'{level}_same_side']:.0f}%"
        for level in ("cav", "mean")
    )


def calibrated_test(model: torch.nn.Module, randoms: list, concepts: list, inputs: dict, classifier: str,
                    n_null: int, args: argparse.Namespace) -> tuple[pd.DataFrame, float]:  # fmt: skip
    """The calibrated test of every concept (K = 5 counterparts, the rest the pool) and seconds per concept."""
    tcav_settings = settings(args, classifier, n_null)
    images = torch.cat([inputs[k] for k in sorted(inputs)])
    labels = torch.cat([torch.full((len(inputs[k]),), k) for k in sorted(inputs)])
    base = tcav.ticket_base(model, 0, list(model.tcav_layers), randoms, (images, labels), tcav_settings)
    started = time.perf_counter()
    tables = [concept_test(base, name, tcav.layer_activations(model, list(base.layers), x),
                           tcav.design_of(tcav_settings)) for name, x in concepts]  # fmt: skip
    return pd.concat(tables, ignore_index=True), (time.perf_counter() - started) / len(concepts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=4)
    parser.add_argument("--random", type=int, default=20)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--set-size", type=int, default=30)
    parser.add_argument("--inputs-per-class", type=int, default=20)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each path (medians reported)")
    parser.add_argument("--device", default="cpu", help="where our engine runs (the captum loop: CPU)")
    parser.add_argument("--decisions", action="store_true", help="also compare calibrated-test decisions")
    parser.add_argument("--null-draws", type=int, default=99, help="N for --decisions (sgd fits are slow)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # 70% of the images are train: room for the R random sets and a concept set of each class
        per_class = math.ceil((args.random * args.set_size / args.classes + 2 * args.set_size) / 0.7)
        data = synthetic_data(args.classes, per_class, args.size)
        save_prepared(data, root / "data.pt")
        train_ticket(Ticket("bench", 0, "ticket", 0), root / "data.pt", MODEL, MODEL_WIDTH, TRAINING, PRUNING,
                     root / "r0" / TICKET_FILES.checkpoint, root / "r0" / TICKET_FILES.metrics,
                     threads=args.threads)  # fmt: skip
        cpu_model = load_model(root / "r0" / TICKET_FILES.checkpoint)
        model = load_model(root / "r0" / TICKET_FILES.checkpoint).to(args.device)
        randoms, concepts, inputs = image_sets(data, args)
        on_device = ([(n, x.to(args.device)) for n, x in randoms], [(n, x.to(args.device)) for n, x in concepts],
                     {k: x.to(args.device) for k, x in inputs.items()})  # fmt: skip
        layers = list(cpu_model.tcav_layers)
        captum_rows, captum_seconds = timed(
            lambda: captum_reference.captum_tcav_rows(cpu_model, layers, concepts, randoms, inputs,
                                                      root / f"captum_{time.perf_counter_ns()}"),
            args.repeat)  # fmt: skip
        report_protocol(args, model, on_device, captum_rows, captum_seconds, len(layers))
        report_calibrated(args, model, on_device)


def report_protocol(args: argparse.Namespace, model: torch.nn.Module, sets: tuple, captum_rows: pd.DataFrame,
                    captum_seconds: float, n_layers: int) -> None:  # fmt: skip
    print(f"TCAV protocol: {args.concepts} concepts x {args.random} random sets x {n_layers} layers x "
          f"{args.classes} classes ({len(captum_rows)} scores), sets of {args.set_size}, {args.inputs_per_class} "
          f"inputs/class, conv4 width {MODEL_WIDTH} at {args.size}px, {args.threads} thread(s), engine on "
          f"{args.device}, median of {args.repeat}")  # fmt: skip
    print(f"  captum loop (sklearn SGD)   : {captum_seconds:8.3f} s")
    print("  agreement with captum's SGD scores, per CAV and per TCAV result (mean over the R random sets):")
    for classifier in CLASSIFIERS:
        rows, seconds = timed(lambda c=classifier: ours_protocol(model, *sets, c, args), args.repeat)
        agree = agreement_text(score_agreement(rows, captum_rows))
        print(
            f"  ours, {classifier:9s}             : {seconds:8.3f} s  ratio {captum_seconds / seconds:6.1f}x  {agree}"
        )
    reseeded = ours_protocol(model, *sets, "sgd", args, seed=CAV_SEED + 1)
    print(
        f"  the SGD reference re-seeded (its own noise)      {agreement_text(score_agreement(reseeded, captum_rows))}"
    )


def report_calibrated(args: argparse.Namespace, model: torch.nn.Module, sets: tuple) -> None:
    _, seconds = calibrated_test(model, *sets, "fastcav", 1999, args)
    print(f"calibrated test, fastcav, K=5, N=1999 (10,000 fits per layer): {seconds:.3f} s per concept")
    if not args.decisions:
        return
    decisions = {}
    for classifier in CLASSIFIERS:
        table, seconds = calibrated_test(model, *sets, classifier, args.null_draws, args)
        decisions[classifier] = table.set_index(["concept", "layer", "target_class"])
        print(f"  calibrated test, {classifier:8s}, N={args.null_draws}: {seconds:8.2f} s per concept")
    reference = decided(decisions["sgd"])
    for classifier in CLASSIFIERS:
        mine = decided(decisions[classifier])
        table = decisions[classifier].reset_index()
        known = table[table["concept"] == "class" + table["target_class"].astype(str) + "_images"]
        found = int(((known["p_value"] <= 0.05) & (known["side"] > 0)).sum())
        print(f"  decisions (p <= 0.05, uncorrected, with direction) {classifier} vs sgd: "
              f"{100 * (mine == reference).mean():.1f}% agree; {int((mine != '').sum())} rejections of {len(mine)}; "
              f"known answer (concept 'class c images' pushes class c up): {found} of {len(known)} rows")  # fmt: skip


def decided(table: pd.DataFrame) -> pd.Series:
    """ "up", "down" or "" per row: the uncorrected decision at 0.05 with its direction."""
    direction = np.where(table["side"] > 0, "up", "down")
    return pd.Series(np.where(table["p_value"] <= 0.05, direction, ""), index=table.index)


if __name__ == "__main__":
    main()
