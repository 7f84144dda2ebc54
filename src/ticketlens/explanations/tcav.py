"""Concept-level explanations (TCAV, Kim et al. 2018) of one ticket: the two workflow steps.

* `tcav_concept`: one concept's calibrated test (`tcav_significance.concept_test`) -> tcav/{slug}.csv.
* `tcav_calibration`: the calibration of that test on this ticket: held-out random image sets, never part of the
  ticket's random pool, run through exactly the same function as a concept -> tcav/calibration.csv.

Both build the ticket's concept-independent evidence from the checkpoint: the activations of the random
sets (counterparts and pool: `tcav_significance.split_random_sets`) and the gradients of each class's logit with respect to each layer for
that class's test inputs, with plain forward hooks; their inner products are all the batched CAV fitters
need (`cav`). Nothing here imports scikit-learn or captum unless `classifier: sgd` is chosen.
Formats: docs/architecture.md ("tcav CSVs").
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ticketlens.data.concepts import load_image_set, load_image_sets
from ticketlens.data.prepared import load_prepared
from ticketlens.device import configure, model_device, resolve_device, to_device
from ticketlens.errors import UserError
from ticketlens.explanations.saliency import stratified_indices
from ticketlens.explanations.tcav_significance import (
    LayerBase,
    TestDesign,
    TicketBase,
    concept_test,
    split_random_sets,
)
from ticketlens.explanations.tcav_stats import TEST_COLUMNS
from ticketlens.fileio import load_torch, write_csv
from ticketlens.lottery.models import get_module
from ticketlens.lottery.rounds import load_model
from ticketlens.study import TcavSettings

log = logging.getLogger(__name__)

INPUT_SEED = 1  # picks the per-class TCAV inputs (the probe set uses seed 0)
BATCH = 256


def _captured(model: nn.Module, layers: list[str]) -> tuple[dict[str, torch.Tensor], list[Any]]:
    """Forward hooks that keep each layer's output of the last forward pass."""
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            outputs[name] = output

        return hook

    handles = [get_module(model, name).register_forward_hook(keep(name)) for name in layers]
    return outputs, handles


def layer_activations(model: nn.Module, layers: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flattened activations (N x F) of every layer, from one forward pass per batch, on the model's device
    (host images move batch by batch; the activations stay there for the CAV fits)."""
    device = model_device(model)
    outputs, handles = _captured(model, layers)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    try:
        with torch.no_grad():
            for start in range(0, len(x), BATCH):
                model(to_device(x[start : start + BATCH], device))
                for name in layers:
                    parts[name].append(outputs[name].reshape(len(outputs[name]), -1).float())
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def layer_gradients(
    model: nn.Module, layers: list[str], x: torch.Tensor, target: int
) -> dict[str, torch.Tensor]:
    """d logit_target / d layer output per input, flattened (N x F per layer): TCAV's sensitivities."""
    outputs, handles = _captured(model, layers)
    try:
        with torch.enable_grad():
            logits = model(to_device(x, model_device(model)))
            grads = torch.autograd.grad(logits[:, int(target)].sum(), [outputs[name] for name in layers])
    finally:
        for handle in handles:
            handle.remove()
    return {name: g.reshape(len(g), -1).detach().float() for name, g in zip(layers, grads, strict=True)}


def target_class_ids(class_names: list[str], target_classes: tuple[str, ...] | int | str) -> list[int]:
    """The classes TCAV tests (`explanations.tcav.target_classes`): "all", a count N (N evenly spaced class
    ids, the first and the last included: data-independent, the same for every ticket), or class names."""
    n = len(class_names)
    if target_classes == "all":
        return list(range(n))
    if isinstance(target_classes, int):
        return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(target_classes, n))})
    index = {name.replace("_", " "): k for k, name in enumerate(class_names)}
    wanted = [str(name) for name in target_classes]
    unknown = [name for name in wanted if name.replace("_", " ") not in index]
    if unknown:
        raise UserError(
            f"explanations.tcav.target_classes: unknown class '{unknown[0]}' (allowed: all, a count, or names "
            f"of the {n} classes, e.g. {', '.join(class_names[:3])})"
        )
    return sorted(index[name.replace("_", " ")] for name in wanted)


def class_inputs(
    data: Any, inputs_per_class: int, target_classes: tuple[str, ...] | int | str = "all"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The test inputs whose gradients TCAV uses: (float images, their classes), the same for every ticket;
    only the target classes' inputs."""
    chosen = stratified_indices(data.labels.numpy(), data.split.numpy(), inputs_per_class, INPUT_SEED)
    targets = target_class_ids(list(data.class_names), target_classes)
    chosen = chosen[np.isin(data.labels.numpy()[chosen], targets)]
    index = torch.from_numpy(chosen)
    return data.float_images(index), data.labels[index].long()


def design_of(tcav: TcavSettings) -> TestDesign:
    return TestDesign(tcav.classifier, tcav.n_counterparts, tcav.n_null_draws, tcav.alpha)


def ticket_base(
    model: nn.Module, ticket_seed: int, layers: list[str], random_sets: list[tuple[str, torch.Tensor]],
    inputs: tuple[torch.Tensor, torch.Tensor], tcav: TcavSettings,
) -> TicketBase:  # fmt: skip
    """The concept-independent evidence of one ticket: counterparts and pool (`split_random_sets`), gradients."""
    if not 1 <= tcav.n_counterparts < len(random_sets):
        raise UserError(f"explanations.tcav.n_counterparts is {tcav.n_counterparts}: it must be at least 1 and "
                        f"below n_random_sets ({len(random_sets)}), the rest being the null's pool")  # fmt: skip
    sizes = {len(images) for _, images in random_sets}
    if len(sizes) != 1:
        raise UserError(f"random sets of different sizes {sorted(sizes)}: re-run the random-sets step")
    images, labels = inputs
    classes = sorted(int(k) for k in labels.unique())
    gradients: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for k in classes:
        for name, g in layer_gradients(model, layers, images[labels == k], k).items():
            gradients[name].append(g)
    order = torch.cat([torch.nonzero(labels == k).squeeze(1) for k in classes])
    activations = layer_activations(model, layers, torch.cat([x for _, x in random_sets]))
    keep = tcav.classifier == "sgd"
    counterparts, pool = split_random_sets(random_sets, tcav.n_counterparts)
    return TicketBase(
        ticket_seed=int(ticket_seed),
        layers={
            name: LayerBase.build(activations[name], torch.cat(gradients[name]), keep) for name in layers
        },
        counterpart_names=[name for name, _ in counterparts],
        set_size=sizes.pop(),
        pool_size=sum(len(x) for _, x in pool),
        input_classes=labels[order],
        classes=classes,
    )


def load_ticket(
    checkpoint: Path,
    data_path: Path,
    random_sets: Path,
    tcav: TcavSettings,
    threads: int,
    device: str = "auto",
) -> tuple[nn.Module, TicketBase]:
    """The ticket on `device` (`study.device`) and its evidence, computed and kept there."""
    torch.set_num_threads(max(1, int(threads)))
    where = resolve_device(device)
    configure(where, deterministic_cpu=False)
    model = load_model(Path(checkpoint), where, Path(data_path))
    seed = int(load_torch(Path(checkpoint), "checkpoint").get("seed", 0))
    layers = list(tcav.layers or model.tcav_layers)
    randoms = load_image_sets(Path(random_sets))
    inputs = class_inputs(load_prepared(Path(data_path)), tcav.inputs_per_class, tcav.target_classes)
    return model, ticket_base(model, seed, layers, randoms, inputs, tcav)


def image_set_test(
    model: nn.Module, base: TicketBase, name: str, images: torch.Tensor, tcav: TcavSettings
) -> pd.DataFrame:
    """The concept test of one image set (a concept or a calibration set)."""
    activations = layer_activations(model, list(base.layers), images)
    return concept_test(base, name, activations, design_of(tcav))[TEST_COLUMNS]


def tcav_concept(
    checkpoint: Path, data_path: Path, random_sets: Path, concept_path: Path, tcav: TcavSettings,
    out: Path, threads: int = 1, device: str = "auto",
) -> pd.DataFrame:  # fmt: skip
    """The calibrated TCAV test of one concept on one ticket, written to `out` (tcav/{slug}.csv)."""
    model, base = load_ticket(checkpoint, data_path, random_sets, tcav, threads, device)
    table = image_set_test(model, base, *load_image_set(Path(concept_path)), tcav)
    write_csv(table, Path(out))
    log.info("TCAV %s: %d rows (%s, K=%d, N=%d) -> %s", table["concept"].iloc[0], len(table), tcav.classifier,
             tcav.n_counterparts, tcav.n_null_draws, out)  # fmt: skip
    return table


def tcav_calibration(
    checkpoint: Path, data_path: Path, random_sets: Path, calibration_sets: Path, tcav: TcavSettings,
    out: Path, threads: int = 1, device: str = "auto",
) -> pd.DataFrame:  # fmt: skip
    """The calibration of the test on one ticket: held-out random sets as concepts -> tcav/calibration.csv."""
    model, base = load_ticket(checkpoint, data_path, random_sets, tcav, threads, device)
    columns = TEST_COLUMNS
    tables = [
        image_set_test(model, base, *image_set, tcav) for image_set in load_image_sets(Path(calibration_sets))
    ]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)
    write_csv(table, Path(out))
    rate = float(np.mean(table["p_value"] <= tcav.alpha)) if len(table) else float("nan")
    log.info("TCAV calibration: %d random sets as concepts, %d rows, %.3f with p <= %g -> %s",
             len(tables), len(table), rate, tcav.alpha, out)  # fmt: skip
    return table
