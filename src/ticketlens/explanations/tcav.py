"""Concept-level explanations: TCAV (Kim et al. 2018) with captum's pieces, computed from a per-ticket cache.

Everything that does not depend on the concept is computed once per ticket by `tcav_null` and kept
in `tcav/activations.pt`: the activations of the R random sets and the gradients of each class's logit
with respect to each layer for that class's inputs. A concept job then only needs the concept's own
activations and R classifier fits. Because nothing goes through captum's on-disk CAV store, its
stale-cache trap (files keyed only by model id, concept id and layer) cannot bite here.

A CAV is trained by captum's `DefaultClassifier` (sklearn SGD, 33% held out), seeded before every fit;
the TCAV score is captum's `sign_count`: the fraction of the class's inputs whose directional derivative
(gradient . CAV) is positive.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ticketlens.data.concepts import load_image_set
from ticketlens.errors import UserError
from ticketlens.explanations import seed_everything
from ticketlens.fileio import atomic_save, file_sha256, load_torch, write_csv
from ticketlens.lottery import load_model
from ticketlens.models import get_module

log = logging.getLogger(__name__)

CAV_SEED = 0  # every CAV fit starts from this seed: CAVs then differ only through their image sets
INPUT_SEED = 1  # picks the per-class TCAV inputs (the probe set uses seed 0)
NEAR_CHANCE = 0.6  # held-out CAV accuracy below this: the layer hardly separates concept from random
ROW_COLUMNS = ["concept", "layer", "target_class", "random_set", "score", "cav_accuracy"]
CACHE_VERSION = 1


def make_classifier(seed: int = CAV_SEED) -> Any:
    """captum's DefaultClassifier (sklearn SGD, alpha 0.01, 33% held out), seeded and with a correct accuracy.

    DefaultClassifier shuffles with `random` and sklearn's SGD draws from numpy's global state; seeding
    both before each fit makes CAVs reproducible and identical between our path and a captum TCAV loop.
    Its reported accuracy is wrong for two-concept sets (captum issue #1122, unfixed in 0.9.0: the
    one-column score is argmax-ed, so it always predicts the first class); we score the held-out split
    with the sign of that column instead. The CAV weights are untouched.
    """
    from captum.concept._utils.classifier import DefaultClassifier, _train_test_split
    from torch.utils.data import DataLoader, TensorDataset

    class SeededClassifier(DefaultClassifier):
        def __init__(self) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its memory warning does not apply to sets of ~30 images
                super().__init__()
            self.seed = seed

        def train_and_eval(self, dataloader: Any, test_split_ratio: float = 0.33, **kwargs: Any) -> dict:
            seed_everything(self.seed)
            batches = list(dataloader)
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            x_train, x_test, y_train, y_test = _train_test_split(x, y, test_split=test_split_ratio)
            self.lm.device = x.device
            self.lm.fit(DataLoader(TensorDataset(x_train, y_train)))
            scores = self.lm(x_test)
            classes = self.lm.classes()
            # binary: one column, positive means the second class
            binary = scores.shape[1] == 1
            picked = (scores[:, 0] > 0).long().cpu() if binary else scores.argmax(dim=1).cpu()
            accuracy = (classes[picked].long() == y_test.long().cpu()).float().mean()
            return {"accs": accuracy}

    return SeededClassifier()


def train_cav(positive: torch.Tensor, negative: torch.Tensor, classifier: Any) -> tuple[torch.Tensor, float]:
    """CAV pointing from `negative` towards `positive` activations (N x F each), and held-out accuracy.

    Labels 0 (concept) and 1 (random) and the concatenation order match what captum's `train_cav`
    feeds the classifier for the experimental set [concept, random], so the fits are identical.
    """
    x = torch.cat([positive, negative]).float()
    y = torch.cat([torch.zeros(len(positive)), torch.ones(len(negative))]).long()
    stats = classifier.train_and_eval([(x, y)]) or {}
    classes = [int(c) for c in classifier.classes()]
    cav = classifier.weights()[classes.index(0)].float()
    accuracy = float(stats.get("accs", float("nan")))
    return cav, accuracy


def sign_count(gradients: torch.Tensor, cav: torch.Tensor) -> float:
    """TCAV score: share of inputs with a positive directional derivative (captum's sign_count)."""
    return float((gradients.float() @ cav > 0).float().mean())


def layer_activations(model: nn.Module, layers: list[str], x: torch.Tensor, batch_size: int = 256) -> dict:
    """Flattened activations (N x F) of every layer, from one forward pass per batch (captum LayerActivation)."""
    from captum.attr import LayerActivation

    explainer = LayerActivation(model, [get_module(model, name) for name in layers])
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            outputs = explainer.attribute(x[start : start + batch_size])
            for name, out in zip(layers, outputs, strict=True):
                parts[name].append(out.reshape(len(out), -1).detach().float())
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def layer_gradients(model: nn.Module, layer: str, x: torch.Tensor, target: int) -> torch.Tensor:
    """d logit_target / d layer output per input, flattened: what captum TCAV uses as sensitivities."""
    from captum.attr import LayerGradientXActivation

    explainer = LayerGradientXActivation(model, get_module(model, layer), multiply_by_inputs=False)
    grads = explainer.attribute(x, target=int(target))
    return grads.reshape(len(grads), -1).detach().float()


def build_cache(
    model: nn.Module,
    layers: list[str],
    random_sets: list[tuple[str, torch.Tensor]],
    class_inputs: dict[int, tuple[np.ndarray, torch.Tensor]],
    checkpoint_sha256: str = "",
) -> dict:
    """The concept-independent part of TCAV for one ticket (saved as tcav/activations.pt)."""
    random_acts = [layer_activations(model, layers, images) for _, images in random_sets]
    classes = sorted(class_inputs)
    return {
        "version": CACHE_VERSION,
        "checkpoint_sha256": checkpoint_sha256,
        "layers": list(layers),
        "random_names": [name for name, _ in random_sets],
        "random": {layer: [acts[layer] for acts in random_acts] for layer in layers},
        "classes": classes,
        "inputs": [torch.as_tensor(class_inputs[k][0], dtype=torch.int64) for k in classes],
        "gradients": {
            layer: [layer_gradients(model, layer, class_inputs[k][1], k) for k in classes] for layer in layers
        },
    }


def concept_rows(concept: str, concept_acts: dict[str, torch.Tensor], cache: dict) -> pd.DataFrame:
    """R CAVs (concept vs random_i) per layer, each scored on every class: one row per CAV and class."""
    classifier = make_classifier()
    rows = []
    for layer in cache["layers"]:
        for name, negative in zip(cache["random_names"], cache["random"][layer], strict=True):
            cav, accuracy = train_cav(concept_acts[layer], negative, classifier)
            for k, grads in zip(cache["classes"], cache["gradients"][layer], strict=True):
                rows.append((concept, layer, int(k), name, sign_count(grads, cav), accuracy))
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def null_rows(cache: dict) -> pd.DataFrame:
    """Random-vs-random CAVs, the null of the reference TCAV test: a fixed random counterpart
    (random set 0) against each other random set i = 1..R-1.

    The null must have the structure of a concept table (one fixed positive set against varying
    negatives): the R CAVs of a concept share their positive set and so their scores are correlated,
    and a null of pairs with varying positives would be more spread and make every concept,
    even a random one, look significant.
    """
    names = cache["random_names"]
    if len(names) < 2:
        raise UserError("TCAV needs at least 2 random sets (explanations.tcav.n_random_sets)")
    classifier = make_classifier()
    rows = []
    for layer in cache["layers"]:
        acts = cache["random"][layer]
        for i in range(1, len(names)):
            cav, accuracy = train_cav(acts[0], acts[i], classifier)
            for k, grads in zip(cache["classes"], cache["gradients"][layer], strict=True):
                rows.append((names[0], layer, int(k), names[i], sign_count(grads, cav), accuracy))
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def load_cache(cache_path: Path) -> dict:
    cache = load_torch(cache_path, "TCAV cache", "run the tcav_null step first")
    if cache.get("version") != CACHE_VERSION:
        raise UserError(f"TCAV cache {cache_path} has an old format: delete it and re-run the tcav_null step")
    return cache


def class_inputs(data: Any, inputs_per_class: int) -> dict[int, tuple[np.ndarray, torch.Tensor]]:
    """Per target class: (indices into data.pt, float images) of the test inputs whose gradients TCAV uses."""
    from ticketlens.explanations.saliency import stratified_indices

    labels = data.labels.numpy()
    chosen = stratified_indices(labels, data.split.numpy(), inputs_per_class, INPUT_SEED)
    return {
        int(k): (
            chosen[labels[chosen] == k],
            data.float_images(torch.from_numpy(chosen[labels[chosen] == k])),
        )
        for k in np.unique(labels[chosen])
    }


def tcav_null(
    checkpoint: Path,
    data_path: Path,
    random_sets: list[Path],
    inputs_per_class: int,
    layers: list[str] | None,
    cache_out: Path,
    null_out: Path,
    threads: int = 1,
) -> None:
    """The concept-independent part of TCAV for one ticket: the activation/gradient cache
    (tcav/activations.pt) and the random-vs-random null (tcav/random.csv)."""
    from ticketlens.data.prepared import load_prepared

    torch.set_num_threads(max(1, int(threads)))
    seed_everything(CAV_SEED)
    data = load_prepared(Path(data_path))
    model = load_model(Path(checkpoint))
    layers = list(layers or model.tcav_layers)
    randoms = [load_image_set(Path(p)) for p in random_sets]
    inputs = class_inputs(data, inputs_per_class)
    cache = build_cache(model, layers, randoms, inputs, file_sha256(Path(checkpoint)))
    null = null_rows(cache)
    atomic_save(cache, Path(cache_out))
    write_csv(null, Path(null_out))
    log.info("TCAV null of %s: %d random sets, layers %s", checkpoint, len(randoms), layers)


def tcav_concept(checkpoint: Path, concept_path: Path, cache_path: Path, out: Path, threads: int = 1) -> None:
    """TCAV scores of one concept for one ticket, written to `out` (tcav/{slug}.csv)."""
    torch.set_num_threads(max(1, int(threads)))
    seed_everything(CAV_SEED)
    cache = load_cache(Path(cache_path))
    digest = file_sha256(Path(checkpoint))
    if cache["checkpoint_sha256"] and cache["checkpoint_sha256"] != digest:
        raise UserError(f"TCAV cache {cache_path} was made for another checkpoint: re-run the tcav_null step")
    model = load_model(Path(checkpoint))
    name, images = load_image_set(Path(concept_path))
    acts = layer_activations(model, cache["layers"], images)
    rows = concept_rows(name, acts, cache)
    write_csv(rows, Path(out))
    log.info("TCAV %s: %d rows -> %s", name, len(rows), out)


# ---------------------------------------------------------------- statistics


def _two_sided_p(a: np.ndarray, b: np.ndarray, equal_var: bool) -> tuple[float, float]:
    """t statistic and p-value; degenerate (zero-variance) samples get p 1 if equal, 0 if not."""
    from scipy.stats import ttest_ind

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return float("nan"), float("nan")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        same = a[0] == b[0]
        return (0.0, 1.0) if same else (float(np.sign(a[0] - b[0]) * np.inf), 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one constant sample: scipy warns, the test holds
        result = ttest_ind(a, b, equal_var=equal_var)
    return float(result.statistic), float(result.pvalue)


KEYS = ["concept", "layer", "target_class"]


def summarize_tcav(concept_rows: pd.DataFrame, null_rows: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Per concept x layer x class: mean and std of the R scores, two-sided t-test against the
    random-vs-random scores of the same layer and class (the reference TCAV test), Bonferroni over
    every concept x layer x class tested here, and the mean held-out CAV accuracy with a near-chance flag.
    """
    columns = [*KEYS, "n", "mean", "std", "null_mean", "null_std", "t_stat", "p_value", "p_bonferroni",
               "significant", "cav_accuracy", "near_chance"]  # fmt: skip
    if concept_rows.empty:
        return pd.DataFrame(columns=columns)
    null = {key: group["score"].to_numpy() for key, group in null_rows.groupby(["layer", "target_class"])}
    records = []
    for (concept, layer, target), group in concept_rows.groupby(KEYS, sort=True):
        scores = group["score"].to_numpy(dtype=float)
        reference = null.get((layer, target), np.zeros(0))
        t_stat, p_value = _two_sided_p(scores, reference, equal_var=True)
        records.append(
            {
                "concept": concept,
                "layer": layer,
                "target_class": int(target),
                "n": len(scores),
                "mean": scores.mean(),
                "std": scores.std(ddof=1) if len(scores) > 1 else float("nan"),
                "null_mean": reference.mean() if len(reference) else float("nan"),
                "null_std": reference.std(ddof=1) if len(reference) > 1 else float("nan"),
                "t_stat": t_stat,
                "p_value": p_value,
                "cav_accuracy": group["cav_accuracy"].mean(),
            }
        )
    summary = pd.DataFrame(records)
    tests = len(summary)  # concepts x layers x classes
    summary["p_bonferroni"] = (summary["p_value"] * tests).clip(upper=1.0)
    summary["significant"] = summary["p_bonferroni"] < alpha  # NaN p-values count as not significant
    summary["near_chance"] = summary["cav_accuracy"] < NEAR_CHANCE
    return summary[columns]


def compare_tcav(
    ticket_summary: pd.DataFrame,
    dense_summary: pd.DataFrame,
    ticket_rows: pd.DataFrame,
    dense_rows: pd.DataFrame,
    alpha: float = 0.05,
) -> dict:
    """How far a ticket's concept explanations moved from the dense net's.

    Returns `spearman` (rank correlation of the mean scores over shared concept x layer x class),
    `jaccard` (of the sets of significant concept x layer x class; NaN when both are empty),
    `n_significant_ticket`, `n_significant_dense`, and `changes`: a DataFrame per concept x layer x
    class with both means, their difference and a Welch t-test over the two sets of R scores, with
    Bonferroni over the rows.
    """
    from scipy.stats import spearmanr

    merged = ticket_summary.merge(dense_summary, on=KEYS, suffixes=("_ticket", "_dense"))
    if len(merged) >= 2 and merged["mean_ticket"].nunique() > 1 and merged["mean_dense"].nunique() > 1:
        rho = float(spearmanr(merged["mean_ticket"], merged["mean_dense"]).statistic)
    else:
        rho = float("nan")
    sig_ticket = {
        tuple(r) for r in ticket_summary.loc[ticket_summary["significant"].astype(bool), KEYS].values
    }
    sig_dense = {tuple(r) for r in dense_summary.loc[dense_summary["significant"].astype(bool), KEYS].values}
    union = sig_ticket | sig_dense
    jaccard = len(sig_ticket & sig_dense) / len(union) if union else float("nan")

    ticket_scores = {key: g["score"].to_numpy(float) for key, g in ticket_rows.groupby(KEYS)}
    dense_scores = {key: g["score"].to_numpy(float) for key, g in dense_rows.groupby(KEYS)}
    records = []
    for key in sorted(set(ticket_scores) & set(dense_scores)):
        a, b = ticket_scores[key], dense_scores[key]
        t_stat, p_value = _two_sided_p(a, b, equal_var=False)
        records.append(dict(zip(KEYS, key, strict=True)) | {
            "mean_ticket": a.mean(), "mean_dense": b.mean(), "delta": a.mean() - b.mean(),
            "t_stat": t_stat, "p_value": p_value,
        })  # fmt: skip
    changes = pd.DataFrame(
        records, columns=[*KEYS, "mean_ticket", "mean_dense", "delta", "t_stat", "p_value"]
    )
    changes["p_bonferroni"] = (changes["p_value"] * max(1, len(changes))).clip(upper=1.0)
    changes["changed"] = changes["p_bonferroni"] < alpha
    return {
        "spearman": rho,
        "jaccard": jaccard,
        "n_significant_ticket": len(sig_ticket),
        "n_significant_dense": len(sig_dense),
        "changes": changes,
    }
