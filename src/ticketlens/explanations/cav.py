"""Batched CAV fitting in Gram form: every CAV of a layer from the inner products of its rows.

A calibrated TCAV test fits tens of thousands of CAVs per ticket and layer (a concept and each of its null
draws against each of K random counterparts). Every fit is a two-set problem, positive rows against
negative rows, with a held-out split chosen by the fit's seed. The batched classifiers give CAVs in the
span of their training rows, w = sum_i a_i x_i (FastCAV's mean difference by definition, L2 logistic
regression by the representer theorem), so all that TCAV needs follows from inner products computed once
per layer (`LayerRows`):

* ``gram`` = X X^T over the layer's activation rows (R x F): each fit's geometry and held-out margins;
* ``cross`` = X G^T with the gradients G (I x F) of the TCAV inputs: directional derivatives
  w . g_i = sum_j a_j cross[j, i].

With F in the thousands and R in the hundreds, a fit costs O(n^2) in its n training rows, not O(n F).

* ``"fastcav"``: FastCAV (Schmalwasser et al., ICML 2025, arXiv 2505.17883), closed form from means.
* ``"logistic"``: L2 logistic regression (unpenalised intercept), damped Newton on the dual coefficients
  (`logistic`).
* ``"sgd"``: captum's DefaultClassifier (scikit-learn SGD), the literature's reference, one problem at a
  time in feature space (`sgd_reference`); scikit-learn and captum are imported only for it.

Same inputs and seeds give bitwise-identical outputs on CPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ticketlens.explanations.logistic import newton_logistic
from ticketlens.explanations.seeds import seed_array
from ticketlens.explanations.sgd_reference import fit_sgd

METHODS = ("sgd", "logistic", "fastcav")
L2 = 0.01  # mean log-loss + L2/2 |w|^2 (captum's SGD uses alpha 0.01 in the same convention)
TEST_FRACTION = 0.33  # captum's default held-out share
GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64 increment
CHUNK_ENTRIES = 1 << 24  # gathered inner products per fitting chunk (128 MiB in float64)


# ---------------------------------------------------------------- seeds and held-out splits


def fit_seed(ticket_seed: int, concept: str, random_set: str, layer: str) -> int:
    """The seed of one CAV fit, derived from what identifies it (63 bits, stable across runs and hosts)."""
    key = f"{int(ticket_seed)}|{concept}|{random_set}|{layer}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def _splitmix64(state: np.ndarray) -> np.ndarray:
    """splitmix64's output function: a counter-based generator, vectorised over seeds and positions."""
    z = state.copy()
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def seeded_permutations(seeds: np.ndarray, n: int, stream: int) -> np.ndarray:
    """One permutation of range(n) per seed (B x n), from the seed's splitmix64 stream `stream`."""
    positions = np.arange(1, n + 1, dtype=np.uint64) + np.uint64(stream) * np.uint64(1 << 32)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        keys = _splitmix64(seeds[:, None] + GOLDEN_GAMMA * positions[None, :])
    return np.argsort(keys, axis=1, kind="stable")


def _test_size(n: int, test_fraction: float) -> int:
    size = int(test_fraction * n)
    if not 1 <= size < n:
        raise ValueError(
            f"a set of {n} rows cannot hold out {test_fraction:.0%} (need >= 1 train and test row)"
        )
    return size


@dataclass(frozen=True)
class HeldOutSplit:
    """Row positions (B x n) within the positive and the negative set: a stratified split per problem."""

    train_positive: torch.Tensor
    test_positive: torch.Tensor
    train_negative: torch.Tensor
    test_negative: torch.Tensor


def held_out_split(
    seeds: torch.Tensor | Sequence[int],
    n_positive: int,
    n_negative: int,
    test_fraction: float = TEST_FRACTION,
) -> HeldOutSplit:
    """Per problem, `int(test_fraction * n)` rows of each set held out, chosen by the problem's seed.

    Stratified (unlike captum's split of the pooled rows), so every problem has the same train and test
    sizes and the B problems stack into one tensor.
    """
    seeds_u64 = seed_array(seeds)
    parts = []
    for stream, n in enumerate((n_positive, n_negative)):
        n_test = _test_size(n, test_fraction)
        order = seeded_permutations(seeds_u64, n, stream)
        parts += [np.sort(order[:, n_test:], axis=1), np.sort(order[:, :n_test], axis=1)]
    train_pos, test_pos, train_neg, test_neg = (torch.from_numpy(p.astype(np.int64)) for p in parts)
    return HeldOutSplit(train_pos, test_pos, train_neg, test_neg)


# ---------------------------------------------------------------- the batched solvers


@dataclass(frozen=True)
class FitGeometry:
    """Inner products of B two-set problems; training rows list positives first, held-out rows too.

    `train`: B x n x n among training rows; `test`: B x n x t, training rows . held-out rows.
    """

    train: torch.Tensor
    test: torch.Tensor
    n_positive_train: int
    n_positive_test: int

    def labels(self) -> torch.Tensor:
        n = self.train.shape[1]
        signs = torch.full((n,), -1.0, dtype=self.train.dtype, device=self.train.device)
        signs[: self.n_positive_train] = 1.0
        return signs


def solve(geometry: FitGeometry, method: str, l2: float = L2) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual coefficients a (B x n) and intercepts b (B): w = sum_i a_i x_i over the training rows."""
    if method == "fastcav":
        return _fastcav(geometry)
    if method == "logistic":
        return newton_logistic(geometry.train, geometry.labels().expand(len(geometry.train), -1), l2)
    raise ValueError(f"unknown batched CAV method '{method}' (allowed: fastcav, logistic)")


def _fastcav_coefficients(labels: torch.Tensor, n_positive: int) -> torch.Tensor:
    """FastCAV's dual coefficients (n): +1/p on the p training positives, -1/q on the q negatives."""
    return torch.where(labels > 0, 1.0 / n_positive, -1.0 / (len(labels) - n_positive)).to(labels.dtype)


def _fastcav(geometry: FitGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """FastCAV: v = mean over the training positives of (x - x_bar), x_bar the mean of all training rows.

    v = q / (p + q) (mean_pos - mean_neg) for p positive and q negative rows: the direction of the mean
    difference, whose coefficients are +1/p and -1/q. A row counts as positive when v . (x - midpoint) > 0,
    midpoint = (mean_pos + mean_neg) / 2: the paper's intercept at the global mean for balanced sets, and the
    class-balanced one otherwise.
    """
    coefficients = _fastcav_coefficients(geometry.labels(), geometry.n_positive_train)
    midpoint = (coefficients.abs() / 2).expand(len(geometry.train), -1)  # mean_pos / 2 + mean_neg / 2
    coefficients = coefficients.expand(len(geometry.train), -1)
    intercept = -torch.einsum("bi,bij,bj->b", coefficients, geometry.train, midpoint)
    return coefficients, intercept


def margins(geometry: FitGeometry, coefficients: torch.Tensor, intercept: torch.Tensor) -> torch.Tensor:
    """w . x + b of every held-out row (B x t)."""
    return torch.einsum("bn,bnt->bt", coefficients, geometry.test) + intercept[:, None]


def held_out_accuracy(scores: torch.Tensor, n_positive: int) -> torch.Tensor:
    """Share of held-out rows on the right side: positives above 0, negatives at or below."""
    correct = (scores[:, :n_positive] > 0).sum(1) + (scores[:, n_positive:] <= 0).sum(1)
    return correct.to(torch.float32) / scores.shape[1]


# ---------------------------------------------------------------- fits from shared rows (the TCAV engine)


@dataclass(frozen=True)
class LayerRows:
    """The rows every fit of one layer draws from, as inner products (float64).

    `gram`: R x R, activation rows . activation rows; `cross`: R x I, activation rows . input gradients.
    `activations` (R x F) and `gradients` (I x F) are kept for the "sgd" reference only, which fits in
    feature space.
    """

    gram: torch.Tensor
    cross: torch.Tensor
    activations: torch.Tensor | None = None
    gradients: torch.Tensor | None = None

    @classmethod
    def build(
        cls, activations: torch.Tensor, gradients: torch.Tensor, keep_features: bool = False
    ) -> LayerRows:
        x, g = activations.float(), gradients.float()
        kept = (x, g) if keep_features else (None, None)
        return cls((x @ x.T).double(), (x @ g.T).double(), *kept)

    def __len__(self) -> int:
        return len(self.gram)


@dataclass(frozen=True)
class RowFit:
    """B fits: directional derivatives w . g of every TCAV input (B x I), held-out accuracy (B), |w| (B)."""

    derivatives: torch.Tensor
    accuracy: torch.Tensor
    norm: torch.Tensor


def split_rows(
    positive: torch.Tensor, negative: torch.Tensor, seeds: Sequence[int], test_fraction: float = TEST_FRACTION
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Row indices of every problem's training rows (B x n) and held-out rows (B x t), positives first."""
    split = held_out_split(seeds, positive.shape[1], negative.shape[1], test_fraction)
    positive, negative = positive.cpu(), negative.cpu()
    train = torch.cat([positive.gather(1, split.train_positive), negative.gather(1, split.train_negative)], 1)
    test = torch.cat([positive.gather(1, split.test_positive), negative.gather(1, split.test_negative)], 1)
    return train, test, split.train_positive.shape[1], split.test_positive.shape[1]


def fit_rows(
    rows: LayerRows,
    positive: torch.Tensor,
    negative: torch.Tensor,
    method: str,
    seeds: Sequence[int],
    l2: float = L2,
) -> RowFit:
    """Fit B CAVs, row indices `positive` (B x N) against `negative` (B x M), one seed per problem.

    With the dual coefficients a of a fit, u = sum_i a_i gram[i] holds w . x for every row (held-out
    margins, the intercept, |w|) and sum_i a_i cross[i] the directional derivatives; both are weighted
    row sums (`embedding_bag`), so no B x n x F or B x n x I tensor is ever built. Only logistic regression
    gathers each problem's n x n training Gram block, for its Newton steps.
    """
    if method not in METHODS:
        raise ValueError(f"unknown CAV method '{method}' (allowed: {', '.join(METHODS)})")
    if len(seeds) != len(positive) or len(negative) != len(positive):
        raise ValueError(f"need one seed and one negative set per problem: {len(seeds)}, {len(negative)}")
    if method == "sgd":
        return _fit_rows_sgd(rows, positive, negative, seeds)
    train, test, n_pos_train, n_pos_test = split_rows(positive, negative, seeds)
    n = train.shape[1]
    chunk = max(1, CHUNK_ENTRIES // (n * n + len(rows) + rows.cross.shape[1]))
    parts: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, len(train), chunk):
        tr, te = (index[start : start + chunk].to(rows.gram.device) for index in (train, test))
        labels = torch.where(torch.arange(n, device=tr.device) < n_pos_train, 1.0, -1.0).to(rows.gram.dtype)
        if method == "logistic":
            coefficients, intercept = newton_logistic(rows.gram[tr[:, :, None], tr[:, None, :]],
                                                       labels.expand(len(tr), -1), l2)  # fmt: skip
        else:
            coefficients, intercept = _fastcav_coefficients(labels, n_pos_train).expand(len(tr), -1), None
        along = torch.nn.functional.embedding_bag(tr, rows.gram, per_sample_weights=coefficients, mode="sum")
        at_train = along.gather(1, tr)
        if intercept is None:  # FastCAV: threshold at the midpoint of the class means
            intercept = -(at_train * _fastcav_coefficients(labels, n_pos_train).abs() / 2).sum(1)
        scores = along.gather(1, te) + intercept[:, None]
        parts.append((
            torch.nn.functional.embedding_bag(tr, rows.cross, per_sample_weights=coefficients, mode="sum"),
            held_out_accuracy(scores, n_pos_test),
            (at_train * coefficients).sum(1).clamp_min(0).sqrt(),
        ))  # fmt: skip
    derivatives, accuracy, norm = (torch.cat(column) for column in zip(*parts, strict=True))
    return RowFit(derivatives, accuracy, norm)


def _fit_rows_sgd(
    rows: LayerRows, positive: torch.Tensor, negative: torch.Tensor, seeds: Sequence[int]
) -> RowFit:
    if rows.activations is None or rows.gradients is None:
        raise ValueError("the sgd reference fits in feature space: build LayerRows with keep_features=True")
    x = rows.activations
    cavs, accuracy = fit_sgd(x[positive.to(x.device)], x[negative.to(x.device)], seeds, TEST_FRACTION)
    return RowFit(cavs.double() @ rows.gradients.double().T, accuracy, cavs.double().norm(dim=1))


def class_means(values: torch.Tensor, input_classes: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Per fit and class (B x K), the mean of `values` (B x I) over the class's inputs."""
    members = input_classes.to(values.device)[:, None] == torch.as_tensor(list(classes), device=values.device)
    weights = members.to(values.dtype) / members.sum(0).clamp_min(1).to(values.dtype)
    return values @ weights


def class_scores(
    derivatives: torch.Tensor, input_classes: torch.Tensor, classes: Sequence[int]
) -> torch.Tensor:
    """TCAV scores B x K: per fit and class, the share of the class's inputs with a positive derivative."""
    return class_means((derivatives > 0).to(torch.float64), input_classes, classes)


# ---------------------------------------------------------------- explicit CAVs (tests, benchmarks)


@dataclass(frozen=True)
class CavFit:
    """B fitted CAVs: unit vectors (B x F) towards the positives, and held-out accuracy (B)."""

    cavs: torch.Tensor
    accuracy: torch.Tensor
    method: str


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    norm = vectors.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, vectors / norm.clamp_min(torch.finfo(vectors.dtype).tiny), vectors)


def fit_cavs(
    positives: torch.Tensor,
    negatives: torch.Tensor,
    method: str,
    seeds: torch.Tensor | Sequence[int],
    test_fraction: float = TEST_FRACTION,
    l2: float = L2,
) -> CavFit:
    """Fit B CAVs in feature space: positives B x N x F against negatives B x M x F, one seed per problem.

    The same solvers as `fit_rows`, with each problem's inner products computed from its own rows; the
    CAV is w = sum_i a_i x_i over the training rows, as a unit vector.
    """
    if method not in METHODS:
        raise ValueError(f"unknown CAV method '{method}' (allowed: {', '.join(METHODS)})")
    if positives.ndim != 3 or negatives.ndim != 3 or positives.shape[::2] != negatives.shape[::2]:
        raise ValueError(
            f"need B x N x F and B x M x F, got {tuple(positives.shape)}, {tuple(negatives.shape)}"
        )
    if len(seeds) != len(positives):
        raise ValueError(f"need one seed per problem: got {len(seeds)} seeds for {len(positives)} problems")
    if method == "sgd":
        cavs, accuracy = fit_sgd(positives, negatives, seeds, test_fraction)
        return CavFit(_unit(cavs.to(positives.dtype)), accuracy, method)
    split = held_out_split(seeds, positives.shape[1], negatives.shape[1], test_fraction)

    def rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, 1, index.to(x.device)[:, :, None].expand(-1, -1, x.shape[-1])).double()

    train = torch.cat([rows(positives, split.train_positive), rows(negatives, split.train_negative)], 1)
    test = torch.cat([rows(positives, split.test_positive), rows(negatives, split.test_negative)], 1)
    geometry = FitGeometry(train @ train.transpose(1, 2), train @ test.transpose(1, 2),
                           split.train_positive.shape[1], split.test_positive.shape[1])  # fmt: skip
    coefficients, intercept = solve(geometry, method, l2)
    accuracy = held_out_accuracy(margins(geometry, coefficients, intercept), geometry.n_positive_test)
    cavs = torch.einsum("bn,bnf->bf", coefficients, train)
    return CavFit(_unit(cavs).to(positives.dtype), accuracy, method)


def tcav_scores(gradients: torch.Tensor | Sequence[torch.Tensor], cavs: torch.Tensor) -> torch.Tensor:
    """TCAV scores B x K: per CAV and class, the share of the class's inputs (gradients N_k x F, or one
    K x N x F tensor) whose directional derivative gradient . CAV is positive (captum's sign_count)."""
    columns = [((g.to(cavs.dtype) @ cavs.T) > 0).to(torch.float32).mean(0) for g in gradients]
    return torch.stack(columns, dim=1)
