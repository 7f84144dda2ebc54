"""A TCAV significance test calibrated by construction: a concept against random concepts.

The reference TCAV test compares a concept's R scores (one positive set against R random counterparts)
with random-vs-random scores in a t-test. The R scores share one positive set, so their spread
understates how much a concept's score varies from one image set to another, and a plain random image
set run through the concept path is flagged far more often than alpha.

Here every "random concept" j (J image sets drawn from the same pool as the counterparts, not
overlapping them) goes through exactly the concept's path: fitted against the same R counterparts with
the same classifier and per-fit seeds derived from its own name. If the concept is just another draw
from the pool (the null), its statistic is exchangeable with the J random concepts' statistics, and a
rank p-value is valid whatever the classifier, the layer or the gradients.

Per (concept, layer, class):
* statistic T: the mean TCAV score over the R counterparts; T_c for the concept, T_j for random concepts.
* p-value: equal-tailed rank test, p = min(1, 2 min(p_up, p_down)) with
  p_up = (1 + #{j: T_j >= T_c}) / (1 + J) and p_down likewise with <=. Each one-sided rank p-value is
  valid under exchangeability (ties count against the concept), so P(p <= alpha) <= alpha, and a
  claimed direction is wrong with probability <= alpha / 2, whatever the null's skew (TCAV scores pile
  up near 0 and 1). The smallest attainable p is 2 / (1 + J).
* effect: T_c - mean(T_j), with the interval [T_c - q_hi, T_c - q_lo] where q_lo, q_hi are the rank
  bounds of the null at alpha: the set of shifts d for which T_c - d would not be rejected, i.e. the
  confidence interval obtained by inverting the test under a location-shift model. It excludes 0 exactly
  when p <= alpha (uncorrected).
* learnability gate: the concept's mean held-out CAV accuracy against the random concepts' (one-sided
  rank p-value at alpha). A concept a layer does not separate better than random sets is "not
  learnable" there and never counted significant.
* Holm over every concept x layer x class of the ticket (non-learnable rows included: conservative).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ticketlens.explanations.cav import fit_cavs, fit_seed, tcav_scores

log = logging.getLogger(__name__)

DEFAULT_METHOD = "fastcav"
ALPHA = 0.05
TIE_TOLERANCE = 1e-9  # scores that agree to this are ties (they are means of counts, summed in any order)
CHUNK_ELEMENTS = 1 << 25  # activations materialised per fitting chunk (128 MiB in float32)
COLUMNS = ["concept", "layer", "target_class", "score", "null_mean", "effect", "effect_low", "effect_high",
           "p_value", "p_holm", "significant", "direction", "cav_accuracy", "null_accuracy",
           "p_learnable", "learnable", "n_random_concepts"]  # fmt: skip


@dataclass(frozen=True)
class LayerEvidence:
    """Everything the test needs at one layer of one ticket (activations flattened to F features).

    `concepts`: name -> N x F; `random_concepts`: J x N x F, sets drawn like a concept from the random
    pool (see `draw_random_concepts`); `counterparts`: R x M x F, the random sets every concept and random
    concept is fitted against; `gradients`: per class in `classes`, N_k x F (d logit_k / d activation).
    """

    concepts: Mapping[str, torch.Tensor]
    random_concepts: torch.Tensor
    counterparts: torch.Tensor
    gradients: Sequence[torch.Tensor]
    classes: Sequence[int]
    counterpart_names: Sequence[str] | None = None


@dataclass(frozen=True)
class LayerStatistics:
    """Mean TCAV score over the R counterparts ((C + J) x K) and mean held-out CAV accuracy (C + J)."""

    scores: np.ndarray
    accuracy: np.ndarray


def draw_random_concepts(pool: torch.Tensor, n_sets: int, set_size: int, seed: int) -> torch.Tensor:
    """J random concepts (n_sets x set_size x F): random subsets of the pool's rows, drawn independently.

    The pool must exclude the counterparts; a concept tested against these is, under the null, one more
    such subset.
    """
    generator = torch.Generator().manual_seed(int(seed))
    index = torch.stack([torch.randperm(len(pool), generator=generator)[:set_size] for _ in range(n_sets)])
    return pool[index.to(pool.device)]


def random_concepts_needed(n_tests: int, alpha: float = ALPHA) -> int:
    """Smallest J for which Holm over `n_tests` can reject anything: 2 / (1 + J) <= alpha / n_tests."""
    return max(1, math.ceil(2 * n_tests / alpha) - 1)


# ---------------------------------------------------------------- fitting


def _counterpart_names(evidence: LayerEvidence) -> list[str]:
    names = evidence.counterpart_names
    return list(names) if names is not None else [f"random_{r}" for r in range(len(evidence.counterparts))]


def layer_statistics(layer: str, evidence: LayerEvidence, ticket_seed: int, method: str) -> LayerStatistics:
    """Fit every concept and random concept against each counterpart (in chunks) and average over them."""
    names = [*evidence.concepts, *(f"random_concept_{j}" for j in range(len(evidence.random_concepts)))]
    sets = torch.cat([torch.stack(list(evidence.concepts.values())), evidence.random_concepts])
    counterparts, counterpart_names = evidence.counterparts, _counterpart_names(evidence)
    if sets.shape[1] != evidence.random_concepts.shape[1]:
        raise ValueError("a concept is exchangeable with random concepts only if its set has their size")
    n_counterparts, size, features = counterparts.shape
    chunk = max(1, CHUNK_ELEMENTS // (n_counterparts * (sets.shape[1] + size) * features))
    scores, accuracy = [], []
    for start in range(0, len(sets), chunk):
        part = sets[start : start + chunk]
        positives = part[:, None].expand(-1, n_counterparts, -1, -1).reshape(-1, *part.shape[1:])
        negatives = counterparts[None].expand(len(part), -1, -1, -1).reshape(-1, size, features)
        seeds = [fit_seed(ticket_seed, name, other, layer)
                 for name in names[start : start + chunk] for other in counterpart_names]  # fmt: skip
        fit = fit_cavs(positives, negatives, method, seeds)
        per_set = tcav_scores(evidence.gradients, fit.cavs).reshape(len(part), n_counterparts, -1)
        scores.append(per_set.mean(1))
        accuracy.append(fit.accuracy.reshape(len(part), n_counterparts).mean(1))
    return LayerStatistics(
        torch.cat(scores).double().cpu().numpy(), torch.cat(accuracy).double().cpu().numpy()
    )


# ---------------------------------------------------------------- rank statistics


def upper_rank_p(concept: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided rank p-value that the concept's value is larger: (1 + #{null >= concept}) / (1 + J).

    concept (...), null (J, ...); ties count against the concept, which keeps the test valid.
    """
    at_least = (null >= concept[None] - TIE_TOLERANCE).sum(0)
    return (1 + at_least) / (1 + len(null))


def equal_tailed_p(concept: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p = min(1, 2 min(p_up, p_down)) and the side (+1 up, -1 down, 0 undecided)."""
    p_up, p_down = upper_rank_p(concept, null), upper_rank_p(-concept, -null)
    side = np.sign(p_down - p_up).astype(int)  # the smaller one-sided p-value names the direction
    return np.minimum(1.0, 2 * np.minimum(p_up, p_down)), side


def null_bounds(null: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Rank bounds (q_lo, q_hi) of the null at level alpha: T_c > q_hi (or < q_lo) iff p <= alpha.

    Rejecting upwards needs #{T_j >= T_c} <= k with k = floor(alpha/2 (1 + J)) - 1, i.e. T_c above the
    (k+1)-th largest null value. With k < 0 nothing can be rejected: the bounds are the score range [0, 1].
    """
    count = len(null)
    k = math.floor(alpha / 2 * (1 + count) + TIE_TOLERANCE) - 1
    if k < 0:
        return np.zeros(null.shape[1:]), np.ones(null.shape[1:])
    ordered = np.sort(null, axis=0)
    return ordered[k], ordered[count - 1 - k]


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN last; every entry counts as a test)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    steps = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted


# ---------------------------------------------------------------- the table


def layer_table(
    layer: str, concepts: Sequence[str], classes: Sequence[int], stats: LayerStatistics, alpha: float
) -> pd.DataFrame:
    """Rows for one layer: concept x class, from the statistics of C concepts followed by J random ones."""
    n_concepts = len(concepts)
    concept, null = stats.scores[:n_concepts], stats.scores[n_concepts:]
    p_value, side = equal_tailed_p(concept, null[:, None, :])
    low, high = null_bounds(null, alpha)
    p_learnable = upper_rank_p(stats.accuracy[:n_concepts], stats.accuracy[n_concepts:, None])
    grid = np.ones((n_concepts, len(classes)))
    return pd.DataFrame(
        {
            "concept": np.repeat(list(concepts), len(classes)),
            "layer": layer,
            "target_class": np.tile(np.asarray(classes, dtype=int), n_concepts),
            "score": concept.ravel(),
            "null_mean": (grid * null.mean(0)).ravel(),
            "effect": (concept - null.mean(0)).ravel(),
            "effect_low": (concept - high).ravel(),
            "effect_high": (concept - low).ravel(),
            "p_value": p_value.ravel(),
            "side": side.ravel(),
            "cav_accuracy": np.repeat(stats.accuracy[:n_concepts], len(classes)),
            "null_accuracy": float(stats.accuracy[n_concepts:].mean()),
            "p_learnable": np.repeat(p_learnable, len(classes)),
            "n_random_concepts": len(null),
        }
    )


def decide(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Holm over all rows, the learnability gate, and the direction of what survives both."""
    table = table.copy()
    table["learnable"] = table["p_learnable"] <= alpha
    table["p_holm"] = holm(table["p_value"].to_numpy())
    table["significant"] = (table["p_holm"] <= alpha) & table["learnable"]
    directions = np.select([table["side"] > 0, table["side"] < 0], ["up", "down"], "")
    table["direction"] = np.where(table["significant"], directions, "")
    return table[COLUMNS]


def calibrated_tcav_test(
    evidence: Mapping[str, LayerEvidence],
    ticket_seed: int,
    method: str = DEFAULT_METHOD,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """The calibrated TCAV test of one ticket: one row per concept x layer x class (columns `COLUMNS`)."""
    tables = []
    for layer, layer_evidence in evidence.items():
        stats = layer_statistics(layer, layer_evidence, ticket_seed, method)
        tables.append(layer_table(layer, list(layer_evidence.concepts), layer_evidence.classes, stats, alpha))
    table = pd.concat(tables, ignore_index=True)
    needed = random_concepts_needed(len(table), alpha)
    if table["n_random_concepts"].min() < needed:
        log.warning("Holm over %d tests cannot reject with %d random concepts (need >= %d)",
                    len(table), table["n_random_concepts"].min(), needed)  # fmt: skip
    return decide(table, alpha)
