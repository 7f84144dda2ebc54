"""The device check: one command on a machine with one GPU, at most 8 minutes, one JSON + markdown file.

    python benchmarks/device_check.py                      # on the GPU node: figures for docs/benchmarks.md
    python benchmarks/device_check.py --smoke              # tiny sizes on the CPU (CI runs this: tests/)

It measures, on `--device` (default auto):
1. training images/s of `ticketlens` training (`BatchStream` + `train`) against a bare PyTorch loop on the
   same ResNet-18 at 224 px, batch 64, bf16 autocast + channels-last (target ratio >= 0.9), interleaved;
2. one CUB-shaped round end to end through the package's job functions at 224 px: prepare a 200-class
   dataset in the CUB_200_2011 layout (synthbirds' generator: the CUB-scale generator of issue 17 is not
   merged yet), random and concept sets, train the dense round, explain it (Grad-CAM, saliency,
   faithfulness, floors), the TCAV calibration and one concept table;
3. TCAV for 112 concepts x 200 classes on that ticket: the concept-independent evidence once, then one
   calibrated test per concept (stopped early and extrapolated when it would pass its time budget).
The figures go to `--out` (JSON) and the same name with `.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ticketlens.device import autocast, configure, resolve_device, to_device, use_channels_last
from ticketlens.lottery.models import build_model
from ticketlens.lottery.pretrained import IMAGENET_MEAN, IMAGENET_STD
from ticketlens.lottery.training import BatchStream, make_optimizer, train
from ticketlens.study import (
    ConceptOptions,
    DataSettings,
    PruningSettings,
    TcavSettings,
    Ticket,
    TrainingSettings,
)


@dataclass(frozen=True)
class Sizes:
    image: int
    batch: int
    iterations: int  # per timed throughput run
    repeats: int
    classes: int
    images_per_class: int
    round_iterations: int
    concepts: int
    inputs_per_class: int
    set_size: int
    n_random_sets: int
    n_null_draws: int
    tcav_budget_s: float


FULL = Sizes(224, 64, 100, 3, 200, 12, 300, 112, 5, 50, 20, 1999, 150.0)
SMOKE = Sizes(32, 8, 3, 2, 3, 20, 4, 3, 2, 4, 4, 19, 60.0)


def training_settings(
    sizes: Sizes, iterations: int, precision: str, augment: str = "none"
) -> TrainingSettings:
    """params.yaml's training keys (the defaults) with this check's schedule, SGD and the options asked."""
    from bench_training_loop import params_training

    return TrainingSettings.from_dict({
        **params_training(), "optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-4, "batch_size": sizes.batch,
        "iterations": iterations, "eval_every": iterations, "checkpoint_every": iterations,
        "augment": augment, "precision": precision,
    })  # fmt: skip


def _resnet(sizes: Sizes, device: torch.device, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet18", sizes.classes, 3, sizes.image, IMAGENET_MEAN, IMAGENET_STD).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model, images, labels, config: TrainingSettings, device: torch.device, cl: bool) -> float:
    """The textbook loop: pinned uint8 batches copied to the device, autocast forward, backward, step."""
    optimizer = make_optimizer(model.parameters(), config)
    model.train()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    per_epoch = len(labels) // config.batch_size
    _sync(device)
    started = time.perf_counter()
    for i in range(config.iterations):
        index = order[(i % per_epoch) * config.batch_size : (i % per_epoch + 1) * config.batch_size]
        x = to_device(images[index], device).float().div_(255.0)
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        y = to_device(labels[index], device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, config.precision):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    _sync(device)
    return config.iterations * config.batch_size / (time.perf_counter() - started)


def ticketlens_loop(model, images, labels, config: TrainingSettings, device: torch.device) -> float:
    validation = (images[: config.batch_size], labels[: config.batch_size])  # one pass at the end, as rare
    stream = BatchStream(images, labels, config.batch_size, seed=0, device=device)
    _sync(device)
    started = time.perf_counter()
    train(model, stream, validation, config)
    _sync(device)
    return config.iterations * config.batch_size / (time.perf_counter() - started)


def throughput(sizes: Sizes, device: torch.device, precision: str) -> dict[str, Any]:
    cl = use_channels_last(None, device)
    generator = torch.Generator().manual_seed(0)
    n = sizes.batch * 8
    images = torch.randint(0, 256, (n, 3, sizes.image, sizes.image), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, sizes.classes, (n,), generator=generator)
    config = training_settings(sizes, sizes.iterations, precision)
    warm = training_settings(sizes, max(2, sizes.iterations // 5), precision)
    bare_loop(_resnet(sizes, device, cl), images, labels, warm, device, cl)  # kernels, allocator, autotune
    bare, ours = [], []
    for _ in range(sizes.repeats):
        bare.append(bare_loop(_resnet(sizes, device, cl), images, labels, config, device, cl))
        ours.append(ticketlens_loop(_resnet(sizes, device, cl), images, labels, config, device))
    return {
        "model": "resnet18", "image_size": sizes.image, "batch_size": sizes.batch, "precision": precision,
        "channels_last": cl, "iterations": sizes.iterations, "repeats": sizes.repeats,
        "bare_images_per_s": [round(v, 1) for v in bare], "ticketlens_images_per_s": [round(v, 1) for v in ours],
        "ratio": round(statistics.median(ours) / statistics.median(bare), 3),
    }  # fmt: skip


def _timed(times: dict[str, float], name: str, function, *args, **kwargs) -> Any:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    times[name] = round(time.perf_counter() - started, 2)
    return result


def cub_round(
    sizes: Sizes, device: torch.device, work: Path, precision: str
) -> tuple[dict[str, Any], Path, Path]:
    """Prepare -> sets -> train round 0 -> explain -> TCAV calibration + one concept, timed step by step."""
    from ticketlens.data import prepare_dataset
    from ticketlens.data.concepts import make_concept_set, make_random_sets
    from ticketlens.explanations.explain import explain_ticket
    from ticketlens.explanations.tcav import tcav_calibration, tcav_concept
    from ticketlens.lottery.rounds import train_ticket

    times: dict[str, float] = {}
    data = work / "prepared" / "data.pt"
    settings = DataSettings.from_dict({
        "root": str(work / "raw"), "n_classes": sizes.classes, "images_per_class": sizes.images_per_class,
        "generate_size": 64, "image_size": sizes.image, "shortcut_rate": 0.0, "generator_seed": 0,
        "validation_fraction": 0.1, "crop_to_box": False,
    })  # fmt: skip
    _timed(times, "prepare_dataset", prepare_dataset, "synthbirds", settings, data, data.parent / "meta.csv")
    randoms, calibration = work / "concepts" / "random_sets.pt", work / "concepts" / "calibration_sets.pt"
    _timed(times, "make_random_sets", make_random_sets, data, sizes.n_random_sets, 2, sizes.set_size, 0,
           randoms, calibration)  # fmt: skip
    concept = work / "concepts" / "texture_dotted.pt"
    options = ConceptOptions.from_dict(
        {"min_certainty": 1, "class_majority": False, "images": "part_patches"}
    )
    _timed(times, "make_concept_set", make_concept_set, data, "synthbirds", "texture_dotted",
           sizes.set_size, options, [randoms], concept)  # fmt: skip
    ticket = Ticket("synthbirds", 0, "ticket", 0)
    folder = work / "ticket"
    training = training_settings(sizes, sizes.round_iterations, precision, augment="crop_flip")
    pruning = PruningSettings.from_dict({
        "scope": "global", "rate_conv": 0.2, "rate_fc": 0.2, "rate_output": 0.2, "exclude": [],
        "one_shot": False, "rewind_iteration": 0,
    })  # fmt: skip
    device_name = str(device)
    checkpoint = folder / "checkpoint.pt"
    metrics = _timed(times, "train_ticket", train_ticket, ticket, data, "resnet18", 1.0, training, pruning,
                     checkpoint, folder / "metrics.json", device=device_name)  # fmt: skip
    _timed(times, "explain_ticket", explain_ticket, checkpoint, data, 1, None, folder / "saliency.npz",
           folder / "saliency.csv", folder / "consistency.csv", folder / "outcomes.csv", device=device_name)  # fmt: skip
    tcav = tcav_settings(sizes)
    _timed(times, "tcav_calibration", tcav_calibration, checkpoint, data, randoms, calibration, tcav,
           folder / "calibration.csv", device=device_name)  # fmt: skip
    _timed(times, "tcav_concept", tcav_concept, checkpoint, data, randoms, concept, tcav,
           folder / "concept.csv", device=device_name)  # fmt: skip
    summary = {
        "dataset": f"synthbirds in the CUB_200_2011 layout, {sizes.classes} classes x {sizes.images_per_class}",
        "image_size": sizes.image, "train_iterations": sizes.round_iterations, "augment": "crop_flip",
        "precision": precision, "test_accuracy": metrics["test_accuracy"],
        "train_images_per_s": round(metrics["images_per_second"], 1), "seconds": times,
    }  # fmt: skip
    return summary, checkpoint, data


def tcav_settings(sizes: Sizes) -> TcavSettings:
    return TcavSettings.from_dict({
        "layers": None, "n_random_sets": sizes.n_random_sets, "set_size": sizes.set_size,
        "inputs_per_class": sizes.inputs_per_class, "alpha": 0.05, "classifier": "fastcav",
        "n_counterparts": min(5, sizes.n_random_sets - 1), "n_null_draws": sizes.n_null_draws,
        "n_calibration_sets": 2, "target_classes": "all",
    })  # fmt: skip


def tcav_scale(
    sizes: Sizes, device: torch.device, checkpoint: Path, data: Path, randoms: Path
) -> dict[str, Any]:
    """112 concepts x 200 classes: the ticket's evidence once, then one test per concept (random images of
    the data as concept sets: the cost does not depend on what the images show)."""
    from ticketlens.data.prepared import load_prepared
    from ticketlens.explanations.tcav import image_set_test, load_ticket

    tcav = tcav_settings(sizes)
    started = time.perf_counter()
    model, base = load_ticket(checkpoint, data, randoms, tcav, threads=torch.get_num_threads(),
                              device=str(device))  # fmt: skip
    _sync(device)
    base_s = time.perf_counter() - started
    prepared = load_prepared(data)
    generator = torch.Generator().manual_seed(0)
    per_concept = []
    for c in range(sizes.concepts):
        index = torch.randperm(len(prepared.labels), generator=generator)[: sizes.set_size]
        started = time.perf_counter()
        image_set_test(model, base, f"concept_{c}", prepared.float_images(index), tcav)
        _sync(device)
        per_concept.append(time.perf_counter() - started)
        if base_s + sum(per_concept) > sizes.tcav_budget_s and c + 1 < sizes.concepts:
            break
    mean = statistics.mean(per_concept)
    return {
        "concepts": sizes.concepts, "classes": len(base.classes), "layers": list(base.layers),
        "inputs": int(len(base.input_classes)), "n_null_draws": sizes.n_null_draws,
        "evidence_seconds": round(base_s, 2), "concepts_timed": len(per_concept),
        "seconds_per_concept": round(mean, 3),
        "total_seconds": round(base_s + mean * sizes.concepts, 1),
        "extrapolated": len(per_concept) < sizes.concepts,
    }  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    t, r, c = report["throughput"], report["cub_round"], report["tcav"]
    lines = [
        f"# Device check ({report['device']}, {report['device_name']})", "",
        f"torch {report['torch']}, {'smoke sizes' if report['smoke'] else 'full sizes'}, "
        f"{report['total_seconds']} s in all.", "",
        f"**Training throughput**, {t['model']} at {t['image_size']} px, batch {t['batch_size']}, "
        f"{t['precision']}, channels-last {t['channels_last']}: bare loop {t['bare_images_per_s']} img/s, "
        f"ticketlens {t['ticketlens_images_per_s']} img/s, ratio {t['ratio']} (target >= 0.9).", "",
        f"**One CUB-shaped round** ({r['dataset']}, {r['image_size']} px, {r['train_iterations']} iterations, "
        f"{r['augment']}): {r['train_images_per_s']} img/s in training; seconds per step:", "",
        "| step | seconds |", "| --- | ---: |",
        *(f"| {step} | {s} |" for step, s in r["seconds"].items()), "",
        f"**TCAV** {c['concepts']} concepts x {c['classes']} classes ({', '.join(c['layers'])}, "
        f"{c['inputs']} inputs, {c['n_null_draws']} null draws): evidence {c['evidence_seconds']} s, "
        f"{c['seconds_per_concept']} s per concept, {c['total_seconds']} s in all"
        f"{' (extrapolated from ' + str(c['concepts_timed']) + ' concepts)' if c['extrapolated'] else ''}.",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the CPU (CI)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--precision", default=None, help="fp32 | bf16 (default: bf16 on CUDA, fp32 on the CPU)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/device_check.json"))
    parser.add_argument(
        "--throughput-only", action="store_true", help="only part 1 (e.g. a CPU's cost per image)"
    )
    parser.add_argument("--image-size", type=int, help="override part 1's image size")
    parser.add_argument("--batch", type=int, help="override part 1's batch size")
    parser.add_argument("--iterations", type=int, help="override part 1's timed iterations")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    configure(device)
    sizes = SMOKE if args.smoke else FULL
    overrides = {"image": args.image_size, "batch": args.batch, "iterations": args.iterations}
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "device": str(device), "smoke": args.smoke, "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "threads": torch.get_num_threads(),
    }  # fmt: skip
    report["throughput"] = throughput(sizes, device, precision)
    if args.throughput_only:
        print(json.dumps(report, indent=2))
        return report
    with tempfile.TemporaryDirectory(prefix="ticketlens-device-check-") as tmp:
        report["cub_round"], checkpoint, data = cub_round(sizes, device, Path(tmp), precision)
        report["tcav"] = tcav_scale(
            sizes, device, checkpoint, data, Path(tmp) / "concepts" / "random_sets.pt"
        )
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
