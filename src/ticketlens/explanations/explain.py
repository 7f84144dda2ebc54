"""Pixel-level explanations of one ticket: standard Grad-CAM and gradient saliency on a fixed probe set,
their localisation and faithfulness, and their consistency with the dense net, the previous round and a
randomised-weights floor. `explain_ticket` writes saliency.npz (with the signed Grad-CAM map and the test
split's per-image correctness, which the findings need for test-set noise), saliency.csv,
consistency.csv and outcomes.csv (every test image's outcome; docs/architecture.md); the concept level is `tcav.tcav_calibration` / `tcav.tcav_concept`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ticketlens.data.prepared import load_prepared
from ticketlens.device import configure, resolve_device
from ticketlens.errors import UserError
from ticketlens.explanations import saliency as sal
from ticketlens.explanations.compare import compare_maps, load_standard_maps
from ticketlens.explanations.faithfulness import deletion_insertion
from ticketlens.explanations.images import test_outcomes
from ticketlens.explanations.seeds import seed_everything
from ticketlens.fileio import file_sha256, write_csv, write_npz
from ticketlens.lottery.provenance import CHECKPOINT_SHA
from ticketlens.lottery.rounds import load_model
from ticketlens.study import SIMILARITY_METRICS

log = logging.getLogger(__name__)

EXPLAIN_SEED = 0
PROBE_SEED = 0
RANDOM_MODEL_SEED = 1234  # the randomised-weights floor is the same draw for every ticket
FAITHFULNESS_STEPS = 20
SALIENCY_COLUMNS = ["probe", "label", "pred", "correct", "method", "empty", "box_mass", "box_hit",
                    "part_mass", "part_hit", "deletion_auc", "insertion_auc", "box_area", "part_area"]  # fmt: skip
CONSISTENCY_COLUMNS = ["probe", "method", "reference", *SIMILARITY_METRICS]


def localisation_table(
    maps: dict[str, np.ndarray],
    probe: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    extras: dict[str, Any],
    faithfulness: dict[str, tuple[np.ndarray, np.ndarray]],
) -> pd.DataFrame:
    """saliency.csv: one row per probe image x method (NaN where the data has no boxes or part masks);
    `empty` marks maps with no positive cell, which every metric scores as its module documents."""
    n = len(probe)
    height, width = next(iter(maps.values())).shape[-2:]
    nan = np.full(n, np.nan)
    boxes = extras.get("boxes")
    box = sal.box_masks(np.asarray(boxes)[probe], height, width) if boxes is not None else None
    part = None
    if extras.get("part_masks") is not None and extras.get("defining_parts") is not None:
        part_maps = np.asarray(extras["part_masks"])[probe]
        part = sal.part_masks_for(part_maps, labels, extras["defining_parts"], height, width)
    frames = []
    for method, m in maps.items():
        deletion, insertion = faithfulness[method]
        frames.append(
            pd.DataFrame(
                {
                    "probe": probe,
                    "label": labels,
                    "pred": preds,
                    "correct": labels == preds,
                    "method": method,
                    "empty": sal.empty_maps(m),
                    "box_mass": sal.mass_share(m, box) if box is not None else nan,
                    "box_hit": sal.pointing_hit(m, box) if box is not None else nan,
                    "part_mass": sal.mass_share(m, part) if part is not None else nan,
                    "part_hit": sal.pointing_hit(m, part) if part is not None else nan,
                    "deletion_auc": deletion,
                    "insertion_auc": insertion,
                    "box_area": sal.area_share(box) if box is not None else nan,
                    "part_area": sal.area_share(part) if part is not None else nan,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[SALIENCY_COLUMNS]


def consistency_table(
    probe: np.ndarray, maps: dict[str, np.ndarray], references: dict[str, dict[str, np.ndarray]]
) -> pd.DataFrame:
    """consistency.csv: similarity of every method's maps with each reference that has that method."""
    frames = []
    for reference, ref_maps in references.items():
        for method, m in maps.items():
            if method not in ref_maps:
                continue
            scores = compare_maps(m, ref_maps[method])
            scores.insert(0, "reference", reference)
            scores.insert(0, "method", method)
            scores.insert(0, "probe", probe)
            frames.append(scores)
    if not frames:
        return pd.DataFrame(columns=CONSISTENCY_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CONSISTENCY_COLUMNS]


def explain_ticket(
    checkpoint: Path,
    data_path: Path,
    probe_per_class: int,
    gradcam_layer: str | None,
    saliency_maps: Path,
    saliency_table: Path,
    consistency: Path,
    outcomes: Path,
    dense_maps: Path | None = None,
    previous_maps: Path | None = None,
    threads: int = 1,
    device: str = "auto",
) -> None:
    """Pixel-level explanations of one ticket and their comparisons with the references given, written to
    `saliency_maps` (saliency.npz), `saliency_table` (saliency.csv) and `consistency` (consistency.csv), and
    how it classifies every test image to `outcomes` (outcomes.csv, `images.test_outcomes`).

    `gradcam_layer` None means the model's last conv block; `dense_maps` / `previous_maps` are the
    saliency.npz of the dense net of the same seed and of the previous round (absent for round 0).
    The model computes on `device` (`study.device`), in fp32; images stay in host memory until used.
    """
    torch.set_num_threads(max(1, int(threads)))
    where = resolve_device(device)
    configure(where, deterministic_cpu=False)
    seed_everything(EXPLAIN_SEED)
    data = load_prepared(Path(data_path))
    model = load_model(Path(checkpoint), where, Path(data_path))
    labels_all = data.labels.numpy()
    probe = sal.stratified_indices(labels_all, data.split.numpy(), probe_per_class, PROBE_SEED)
    if len(probe) == 0:
        raise UserError(f"{data_path} has no test images to explain")
    x = data.float_images(torch.from_numpy(probe))
    target = torch.from_numpy(labels_all[probe])
    logits = sal.predict(model, x)
    preds = logits.argmax(dim=1).numpy()
    layer = gradcam_layer or getattr(model, "gradcam_layer", None)
    all_maps = sal.explain_probe(model, x, target, layer)
    maps = sal.standard_maps(all_maps)
    per_image = test_outcomes(model, data)
    test_indices = per_image["image"].to_numpy(dtype=np.int64)
    test_correct = per_image["correct"].to_numpy(dtype=bool)
    arrays = {**all_maps, "probe": probe, "labels": labels_all[probe].astype(np.int64)}
    arrays |= {"preds": preds.astype(np.int64), "logits": logits.numpy().astype(np.float32)}
    arrays |= {"test_indices": test_indices, "test_correct": test_correct}
    arrays[CHECKPOINT_SHA] = np.array(file_sha256(Path(checkpoint)))  # which checkpoint these maps explain
    faith = {
        method: deletion_insertion(model, x, m, target, data.mean, FAITHFULNESS_STEPS)[:2]
        for method, m in maps.items()
    }
    table = localisation_table(maps, probe, labels_all[probe], preds, data.extras, faith)
    random_model = sal.randomized_copy(model, RANDOM_MODEL_SEED)
    references = {"random": sal.standard_maps(sal.explain_probe(random_model, x, target, layer))}
    for name, path in (("dense", dense_maps), ("previous", previous_maps)):
        if path is not None:
            references[name] = sal.standard_maps(load_standard_maps(Path(path), probe))
    similarity = consistency_table(probe, maps, references)
    # maps first, tables after: every target is written atomically, so a killed job leaves none half-done
    write_npz(arrays, Path(saliency_maps))
    write_csv(table, Path(saliency_table))
    write_csv(similarity, Path(consistency))
    write_csv(per_image, Path(outcomes), float_format="%.6g")
    log.info("explained %s: %d probe images, methods %s", checkpoint, len(probe), list(maps))
