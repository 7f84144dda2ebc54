"""Test and benchmark oracle: TCAV through captum's own `TCAV.interpret` loop, one concept at a time.

Not part of the package: ticketlens fits every CAV of a ticket in one batched solve (`explanations.cav`);
this is the straightforward captum loop that its "sgd" classifier must reproduce exactly
(tests/explanations/test_tcav.py) and the baseline it is timed against (benchmarks/bench_tcav.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ticketlens.explanations.sgd_reference import make_classifier

ROW_COLUMNS = ["concept", "layer", "target_class", "random_set", "score", "cav_accuracy"]


def weights_fingerprint(model: nn.Module) -> str:
    """Hash of the weights, so captum's caches keyed by model id can never serve a changed model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def captum_tcav_rows(
    model: nn.Module,
    layers: list[str],
    concepts: list[tuple[str, torch.Tensor]],
    random_sets: list[tuple[str, torch.Tensor]],
    class_inputs: dict[int, torch.Tensor],
    save_root: Path,
    model_id: str | None = None,
) -> pd.DataFrame:
    """The straightforward loop: one captum `TCAV` per concept, `interpret` per class.

    One row per CAV and class: the reference our "sgd" path must reproduce, and the benchmark baseline. Each concept gets its own
    save path under `save_root` and a fixed concept id (0; random sets 1..R), and the model id is a hash
    of the weights, so captum's on-disk cache can never serve CAVs of another model or concept.
    """
    from captum.concept import TCAV, Concept

    model_id = model_id or f"model-{weights_fingerprint(model)}"
    randoms = [Concept(i + 1, name, [images]) for i, (name, images) in enumerate(random_sets)]
    rows = []
    for c, (name, images) in enumerate(concepts):
        concept = Concept(0, name, [images])
        save_path = Path(save_root) / f"concept_{c}"
        tcav = TCAV(model, layers, model_id=model_id, classifier=make_classifier(), save_path=str(save_path))
        sets = [[concept, rnd] for rnd in randoms]
        for k, inputs in sorted(class_inputs.items()):
            scores = tcav.interpret(inputs, sets, target=int(k))
            for rnd in randoms:
                key = f"{concept.id}-{rnd.id}"
                for layer in layers:
                    stats = tcav.cavs[key][layer].stats
                    score = float(scores[key][layer]["sign_count"][0])
                    rows.append((name, layer, int(k), rnd.name, score, float(stats["accs"])))
    return pd.DataFrame(rows, columns=ROW_COLUMNS)
