"""The TCAV test of one concept on one ticket, calibrated by construction (a Monte Carlo permutation test).

The reference TCAV test compares a concept's R scores (one positive set against R random counterparts)
with random-vs-random scores in a t-test. The R scores share one positive set, so their spread understates
how much a concept's score varies from one image set to another: a plain random image set run through the
concept path is flagged far more often than alpha (docs/benchmarks.md, tests/explanations/test_tcav_significance.py).

Here, per layer:

* The ticket's random sets are split into K counterparts and a pool (`split_random_sets`). A set is
  fitted against each counterpart (one seed per fit); per class, its TCAV score is the mean over the K fits
  of the share of the class's inputs with a positive directional derivative, and its test statistic U the
  mean over the K fits and those inputs of the cosine between CAV and gradient (the TCAV score thresholds
  these cosines at 0 and saturates at 0 and 1, for random sets too, which costs a rank test its power).
* The null: N draws of n rows from the pool and the concept's own n rows together, each fitted and scored
  exactly like the concept (same K counterparts, classifier and seed scheme). Under the null hypothesis the
  concept's images are as exchangeable with the pool's as random training images are, so the concept set
  is one more uniform draw from that union: U_concept and the N draws' U are exchangeable and a rank
  p-value is exact whatever the classifier, the layer or the gradients. Including the concept's rows in
  the union is what makes it exact for a concept that is not a subset of the pool (a fixed pool alone
  gives a null that is slightly too narrow); the same holds for the CAV accuracy (the learnability test).
* With FastCAV (the default) the statistic comes from the CAV of all of a set's rows, in closed form
  (`cav.fastcav_all_rows`); the held-out fits that the learnability test needs are made for the concept and
  its first LEARNABILITY_DRAWS draws only. The other classifiers fit every set on its training rows.
* Power comes from the set size: the null's spread of cosines does not shrink with n (a random set's CAV
  points in a random direction whatever its size), while a concept's CAV converges to the concept's
  direction as n grows. Measured on the known-answer birds (docs/benchmarks.md, "TCAV power"): with sets
  of 30 the blue wing's class 3 at the last layer had p 0.08-0.44 depending on the CPU kernels, with 100
  it is 0.001 (the smallest p that 1,999 draws give) under each kernel choice tried.
* Two-sided equal-tailed rank p-value and its side (`tcav_stats`); Holm over the ticket's family comes
  at summary time.

Draws are shared by all layers (the concept is the same image set at every layer); fit seeds depend on the
ticket's seed, the set, the counterpart and the layer (`cav.fit_seed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from ticketlens.explanations.cav import (
    LayerRows,
    class_means,
    class_scores,
    fastcav_all_rows,
    fit_rows,
    fit_seed,
    seeded_permutations,
)
from ticketlens.explanations.seeds import seed_array
from ticketlens.explanations.tcav_stats import SetStatistics, layer_table

T = TypeVar("T")
DRAW_STREAM = 7  # splitmix64 stream of the null draws (the held-out splits use streams 0 and 1)
# The learnability gate is a one-sided test at alpha, uncorrected: 199 null draws resolve p down to 0.005,
# and the held-out fits it needs are the costly part of a test (the FastCAV statistic is closed form).
LEARNABILITY_DRAWS = 199


@dataclass(frozen=True)
class TestDesign:
    """What the test needs from `explanations.tcav`: classifier, K, N and alpha (for the effect interval)."""

    classifier: str
    n_counterparts: int
    n_null: int
    alpha: float


@dataclass(frozen=True)
class LayerBase:
    """One layer's concept-independent rows: K counterparts of M rows, then the pool's P rows.

    `activations` (K M + P) x F, `gradients` I x F for the inputs of `input_classes`; `rows` their inner
    products (`cav.LayerRows`), extended by each concept's rows.
    """

    activations: torch.Tensor
    gradients: torch.Tensor
    rows: LayerRows

    @classmethod
    def build(cls, activations: torch.Tensor, gradients: torch.Tensor, keep_features: bool) -> LayerBase:
        return cls(
            activations.float(), gradients.float(), LayerRows.build(activations, gradients, keep_features)
        )

    def with_concept(self, concept: torch.Tensor) -> LayerRows:
        """The base rows followed by the concept's n rows (only the new blocks are computed)."""
        x, c, g = self.activations, concept.float().to(self.activations.device), self.gradients
        cross_block = (c @ x.T).double()
        gram = torch.cat(
            [torch.cat([self.rows.gram, cross_block.T], 1), torch.cat([cross_block, (c @ c.T).double()], 1)]
        )
        cross = torch.cat([self.rows.cross, (c @ g.T).double()])
        kept = self.rows.activations is not None
        return LayerRows(gram, cross, torch.cat([x, c]) if kept else None, g if kept else None)


@dataclass(frozen=True)
class TicketBase:
    """Everything of one ticket the test of any concept reuses."""

    ticket_seed: int
    layers: dict[str, LayerBase]
    counterpart_names: list[str]
    set_size: int  # M, rows per counterpart
    pool_size: int  # P
    input_classes: torch.Tensor
    classes: list[int]


def split_random_sets(random_sets: Sequence[T], k: int) -> tuple[Sequence[T], Sequence[T]]:
    """The roles of a ticket's random sets, stated here only: the first K (`explanations.tcav.n_counterparts`)
    are the counterparts, every CAV's negatives; the rest are the pool the permutation null draws from."""
    return random_sets[:k], random_sets[k:]


def null_draws(ticket_seed: int, concept: str, union: int, size: int, count: int) -> torch.Tensor:
    """N uniform draws of `size` distinct positions out of `union` (N x size), seeded by ticket and concept."""
    seeds = np.array(
        [fit_seed(ticket_seed, concept, f"null_{j}", "draw") for j in range(count)], dtype=np.uint64
    )
    order = seeded_permutations(seeds, union, DRAW_STREAM)
    return torch.from_numpy(np.sort(order[:, :size], axis=1).astype(np.int64))


def set_statistics(
    rows: LayerRows,
    sets: torch.Tensor,
    names: Sequence[str],
    base: TicketBase,
    layer: str,
    design: TestDesign,
) -> SetStatistics:
    """Every set (row indices, S x n) against each of the K counterparts (the first K M rows of `rows`):
    per set and class the mean over the K fits of the TCAV score and of the cosine(CAV, gradient), and the
    held-out CAV accuracy of the first 1 + LEARNABILITY_DRAWS sets (the concept and its first null draws).

    FastCAV's statistic comes from the CAV of all of a set's rows (`cav.fastcav_all_rows`, closed form:
    every image sharpens the concept's direction, which is where the test's power comes from); the other
    classifiers, and every classifier's held-out accuracy, from the fits on each set's training rows.
    """
    k, m = len(base.counterpart_names), base.set_size
    counterparts = torch.arange(k * m).view(k, m)
    fitted = len(sets) if design.classifier != "fastcav" else min(len(sets), 1 + LEARNABILITY_DRAWS)
    seeds = [
        fit_seed(base.ticket_seed, name, other, layer)
        for name in names[:fitted]
        for other in base.counterpart_names
    ]
    fit = fit_rows(rows, sets[:fitted].repeat_interleave(k, dim=0), counterparts.repeat(fitted, 1),
                   design.classifier, seed_array(seeds).tolist())  # fmt: skip
    accuracy = fit.accuracy.double().view(fitted, k).mean(1)[: 1 + LEARNABILITY_DRAWS]
    if design.classifier == "fastcav":
        fit = fastcav_all_rows(rows, sets, counterparts)
    gradient_norm = base.layers[layer].gradients.double().norm(dim=1).to(fit.derivatives.device)
    scale = fit.norm[:, None] * gradient_norm[None]
    cosine = torch.where(scale > 0, fit.derivatives / scale.clamp_min(torch.finfo(scale.dtype).tiny), 0.0)
    scores = class_scores(fit.derivatives, base.input_classes, base.classes)
    cosines = class_means(cosine, base.input_classes, base.classes)
    return SetStatistics(
        scores=scores.view(len(sets), k, -1).mean(1).cpu().numpy(),
        cosines=cosines.view(len(sets), k, -1).mean(1).cpu().numpy(),
        accuracy=accuracy.cpu().numpy(),
    )


def concept_test(
    base: TicketBase, concept: str, activations: dict[str, torch.Tensor], design: TestDesign
) -> pd.DataFrame:
    """The test of one concept (its activations per layer, n x F) on one ticket: one row per layer x class."""
    size = len(next(iter(activations.values())))
    first_pool_row = len(base.counterpart_names) * base.set_size
    union = base.pool_size + size
    draws = null_draws(base.ticket_seed, concept, union, size, design.n_null) + first_pool_row
    own = torch.arange(first_pool_row + base.pool_size, first_pool_row + union)[None]
    sets = torch.cat([own, draws])
    names = [concept, *(f"{concept}|null_{j}" for j in range(design.n_null))]
    tables = []
    for layer, layer_base in base.layers.items():
        stats = set_statistics(layer_base.with_concept(activations[layer]), sets, names, base, layer, design)
        tables.append(layer_table(concept, layer, base.classes, stats, design.alpha))
    table = pd.concat(tables, ignore_index=True)
    return table.assign(n_counterparts=len(base.counterpart_names), classifier=design.classifier)
