"""Per-image evidence of one ticket: how it classifies every test image (outcomes.csv) and, for a stratified
subset of test images, how far its Grad-CAM and saliency maps are from its own dense net's (agreement.csv,
with the maps in images.npz). The forgetting analysis (`analysis.forgetting`) asks whether the images a
ticket forgets are those whose explanations moved first; the probe set of `explain` (a few images a class)
is too small for that, so this subset is sized to test (`explanations.images_per_class`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ticketlens.data.prepared import TEST, load_prepared
from ticketlens.device import configure, host, model_device, resolve_device, to_device
from ticketlens.errors import UserError
from ticketlens.explanations import saliency as sal
from ticketlens.explanations.compare import compare_maps
from ticketlens.explanations.seeds import seed_everything
from ticketlens.fileio import file_sha256, load_npz, write_csv, write_npz
from ticketlens.lottery.provenance import CHECKPOINT_SHA
from ticketlens.lottery.rounds import load_model
from ticketlens.study import AGREEMENT_COLUMNS, METHOD_NAMES, OUTCOME_COLUMNS

log = logging.getLogger(__name__)

IMAGES_SEED = 1  # not the probe set's seed (0): the subset is drawn independently of the probe images
EXPLAIN_SEED = 0


@torch.no_grad()
def test_outcomes(model: torch.nn.Module, data: Any, batch_size: int = 512) -> pd.DataFrame:
    """outcomes.csv: one row per test image (index into data.pt), its label, whether the model classifies
    it correctly, the predicted class, the cross-entropy loss and the margin (true-class logit minus the
    largest other logit: negative where the image is misclassified)."""
    device = model_device(model)
    indices = data.indices(TEST)
    parts = []
    for start in range(0, len(indices), batch_size):
        index = indices[start : start + batch_size]
        labels = data.labels[index]
        logits = host(model(to_device(data.images[index], device).float().div_(255.0))).float()
        true = logits.gather(1, labels[:, None])[:, 0]
        others = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
        parts.append(
            pd.DataFrame(
                {
                    "image": index.numpy().astype(np.int64),
                    "label": labels.numpy().astype(np.int64),
                    "correct": logits.argmax(dim=1).eq(labels).numpy(),
                    "predicted": logits.argmax(dim=1).numpy().astype(np.int64),
                    "loss": F.cross_entropy(logits, labels, reduction="none").numpy(),
                    "margin": (true - others).numpy(),
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=OUTCOME_COLUMNS)


def explained_images(labels: np.ndarray, split: np.ndarray, per_class: int | None) -> np.ndarray:
    """The explained subset: `per_class` test images of each class (every test image when None), the same
    for every ticket, round and seed (it depends on the data only)."""
    if per_class is None:
        return np.flatnonzero(np.asarray(split) == TEST).astype(np.int64)
    return sal.stratified_indices(labels, split, per_class, IMAGES_SEED)


def agreement_table(
    images: np.ndarray, labels: np.ndarray, maps: dict[str, np.ndarray], dense: dict[str, np.ndarray]
) -> pd.DataFrame:
    """agreement.csv: per explained image and method, every similarity metric of the ticket's map with its
    dense net's map (the dense net itself scores its identity: 1 where defined, `compare`'s constant-map rules)."""
    frames = []
    for method, m in maps.items():
        if method not in dense:
            continue
        scores = compare_maps(m, dense[method])
        scores.insert(0, "method", method)
        scores.insert(0, "label", labels)
        scores.insert(0, "image", images)
        frames.append(scores)
    if not frames:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    return pd.concat(frames, ignore_index=True)[AGREEMENT_COLUMNS]


def load_image_maps(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """The dense net's standard maps of the explained subset, refusing maps of other images."""
    if not Path(path).is_file():
        raise UserError(f"dense image maps {path} not found (run explain_images on the dense net first)")
    ref = load_npz(path, "image maps")
    if "images" not in ref or not np.array_equal(ref["images"], images):
        raise UserError(f"{path} explains other images: re-run it with the same explanations params")
    return {m: ref[m] for m in METHOD_NAMES if m in ref}


def explain_images(
    checkpoint: Path,
    data_path: Path,
    images_per_class: int | None,
    gradcam_layer: str | None,
    image_maps: Path,
    agreement: Path,
    dense_maps: Path | None = None,
    threads: int = 1,
    device: str = "auto",
) -> None:
    """Grad-CAM and saliency of the explained subset (in batches), written to `image_maps` (images.npz:
    `images`, `labels`, one N x H x W float32 array per method, `checkpoint_sha256`), and their agreement with
    the dense net's maps `dense_maps` (that net's images.npz; None for the dense net itself) to `agreement`."""
    torch.set_num_threads(max(1, int(threads)))
    where = resolve_device(device)
    configure(where, deterministic_cpu=False)
    seed_everything(EXPLAIN_SEED)
    data = load_prepared(Path(data_path))
    model = load_model(Path(checkpoint), where, data_path=Path(data_path))
    labels_all = data.labels.numpy()
    images = explained_images(labels_all, data.split.numpy(), images_per_class)
    if len(images) == 0:
        raise UserError(f"{data_path} has no test images to explain")
    x = data.float_images(torch.from_numpy(images))
    labels = labels_all[images].astype(np.int64)
    layer = gradcam_layer or getattr(model, "gradcam_layer", None)
    maps = sal.standard_maps(sal.explain_probe(model, x, torch.from_numpy(labels), layer))
    dense = maps if dense_maps is None else load_image_maps(Path(dense_maps), images)
    table = agreement_table(images, labels, maps, dense)
    arrays = {"images": images, "labels": labels, **maps}
    arrays[CHECKPOINT_SHA] = np.array(file_sha256(Path(checkpoint)))
    write_npz(arrays, Path(image_maps))
    write_csv(table, Path(agreement), float_format="%.6g")
    log.info("explained %d test images of %s, methods %s", len(images), checkpoint, list(maps))
