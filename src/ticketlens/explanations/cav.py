"""Batched CAV fitting: B independent two-set problems (positives vs negatives) in one call.

A TCAV study fits thousands of CAVs per ticket (every concept and every random concept against each
random counterpart, per layer); fitting them one at a time through scikit-learn was 85-90% of TCAV time.
`fit_cavs` fits all B problems of one layer at once, on the tensors' device:

* ``"logistic"``: L2-regularised logistic regression (unpenalised intercept) on features standardised
  with each problem's training statistics, solved by damped Newton in the span of the training rows
  (representer theorem: w = Z^T a), so every step is a batched (n+1) x (n+1) solve with n training rows,
  whatever the feature count F.
* ``"fastcav"``: FastCAV (Schmalwasser et al., ICML 2025, arXiv 2505.17883), closed form from means.
* ``"sgd"``: the captum-compatible reference (captum's DefaultClassifier, sklearn SGD), one problem at
  a time through `tcav.make_classifier` / `tcav.train_cav`; scikit-learn and captum are imported only here.

Every problem gets its own seed, which fixes its held-out split (and, for "sgd", the SGD draws), so the
classifier's own variance is part of any null built from these fits. CAVs are unit vectors pointing
towards the positive set; held-out accuracy is measured on the seeded split. Same inputs and seeds give
bitwise-identical outputs on CPU.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

METHODS = ("sgd", "logistic", "fastcav")
L2 = 0.01  # mean log-loss + L2/2 |w|^2 (captum's SGD uses alpha 0.01 in the same convention)
TEST_FRACTION = 0.33  # captum's default held-out share
NEWTON_ITERATIONS = 50
NEWTON_TOLERANCE = 1e-10  # on the norm of the primal gradient (the objective is O(1))
STEP_SIZES = 2.0 ** -torch.arange(0, 21, dtype=torch.float64)  # backtracking candidates, all tried at once
ARMIJO = 1e-4
MIN_RELATIVE_STD = 1e-6  # features flatter than this (dead units) are left out of a fit, not blown up
GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64 increment


@dataclass(frozen=True)
class CavFit:
    """B fitted CAVs: unit vectors (B x F) towards the positives, and held-out accuracy (B)."""

    cavs: torch.Tensor
    accuracy: torch.Tensor
    method: str


@dataclass(frozen=True)
class HeldOutSplit:
    """Row indices (B x n) into the positive and the negative sets: a stratified split per problem."""

    train_positive: torch.Tensor
    test_positive: torch.Tensor
    train_negative: torch.Tensor
    test_negative: torch.Tensor


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


def _seeded_permutations(seeds: np.ndarray, n: int, stream: int) -> np.ndarray:
    """One permutation of range(n) per seed (B x n), from the seed's splitmix64 stream `stream`."""
    positions = np.arange(1, n + 1, dtype=np.uint64) + np.uint64(stream) * np.uint64(1 << 32)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        keys = _splitmix64(seeds[:, None] + GOLDEN_GAMMA * positions[None, :])
    return np.argsort(keys, axis=1, kind="stable")


def _as_seed_array(seeds: torch.Tensor | Sequence[int], count: int) -> np.ndarray:
    values = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
    if len(values) != count:
        raise ValueError(f"need one seed per problem: got {len(values)} seeds for {count} problems")
    return np.array([int(s) % 2**64 for s in values], dtype=np.uint64)


def _test_size(n: int, test_fraction: float) -> int:
    size = int(test_fraction * n)
    if not 1 <= size < n:
        raise ValueError(
            f"a set of {n} rows cannot hold out {test_fraction:.0%} (need >= 1 train and test row)"
        )
    return size


def held_out_split(
    seeds: torch.Tensor | Sequence[int],
    n_positive: int,
    n_negative: int,
    test_fraction: float = TEST_FRACTION,
) -> HeldOutSplit:
    """Per problem, `int(test_fraction * n)` rows of each set held out, chosen by the problem's seed.

    Stratified (unlike captum's split of the pooled rows) so every problem has the same train and test
    sizes and the B problems stack into one tensor.
    """
    seed_array = _as_seed_array(seeds, len(seeds))
    parts = []
    for stream, n in enumerate((n_positive, n_negative)):
        n_test = _test_size(n, test_fraction)
        order = _seeded_permutations(seed_array, n, stream)
        parts += [np.sort(order[:, n_test:], axis=1), np.sort(order[:, :n_test], axis=1)]
    train_pos, test_pos, train_neg, test_neg = (torch.from_numpy(p.astype(np.int64)) for p in parts)
    return HeldOutSplit(train_pos, test_pos, train_neg, test_neg)


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b]] for every problem b (B x n x F)."""
    index = index.to(x.device)
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[-1]))


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    norm = vectors.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, vectors / norm.clamp_min(torch.finfo(vectors.dtype).tiny), vectors)


def _accuracy(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Share of held-out rows on the right side: positives above 0, negatives at or below."""
    correct = (pos_scores > 0).sum(1) + (neg_scores <= 0).sum(1)
    return correct.to(torch.float32) / (pos_scores.shape[1] + neg_scores.shape[1])


def fit_cavs(
    positives: torch.Tensor,
    negatives: torch.Tensor,
    method: str,
    seeds: torch.Tensor | Sequence[int],
    test_fraction: float = TEST_FRACTION,
    l2: float = L2,
) -> CavFit:
    """Fit B CAVs: positives B x N x F against negatives B x M x F, one seed per problem.

    Memory is O(B (N + M) F) on the tensors' device: callers with many problems fit them in chunks.
    `l2` applies to "logistic" only (sklearn's C = 1 / (l2 * n_train)).
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
        return _fit_sgd(positives, negatives, seeds, test_fraction)
    split = held_out_split(seeds, positives.shape[1], negatives.shape[1], test_fraction)
    train = (_rows(positives, split.train_positive), _rows(negatives, split.train_negative))
    test = (_rows(positives, split.test_positive), _rows(negatives, split.test_negative))
    fit = _fit_fastcav if method == "fastcav" else functools.partial(_fit_logistic, l2=l2)
    cavs, accuracy = fit(train, test)
    return CavFit(cavs, accuracy, method)


# ---------------------------------------------------------------- FastCAV


def _fit_fastcav(
    train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """FastCAV: v = mean over the training positives of (a - a_bar), a_bar the mean of all training rows.

    v = M / (N + M) (mean_pos - mean_neg), so its unit vector is that of the mean difference. A held-out
    row counts as positive when v . (a - midpoint) > 0, midpoint = (mean_pos + mean_neg) / 2: the
    paper's intercept at the global mean for balanced sets, and the class-balanced one otherwise.
    """
    mean_pos, mean_neg = train[0].mean(1), train[1].mean(1)
    n_pos, n_neg = train[0].shape[1], train[1].shape[1]
    global_mean = (n_pos * mean_pos + n_neg * mean_neg) / (n_pos + n_neg)
    cavs = _unit(mean_pos - global_mean)
    midpoint = (mean_pos + mean_neg) / 2
    threshold = (cavs * midpoint).sum(-1, keepdim=True)
    scores = [torch.einsum("bnf,bf->bn", rows, cavs) - threshold for rows in test]
    return cavs, _accuracy(*scores)


# ---------------------------------------------------------------- logistic regression


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z = (x - mean) / std with each problem's training statistics; flat features get weight 0."""
    mean = train.mean(1, keepdim=True)
    std = train.std(1, correction=0, keepdim=True)
    floor = MIN_RELATIVE_STD * std.amax(-1, keepdim=True)
    scale = torch.where(std > floor, 1.0 / std.clamp_min(torch.finfo(std.dtype).tiny), torch.zeros_like(std))
    return (train - mean) * scale, (test - mean) * scale, scale.squeeze(1)


def _fit_logistic(
    train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched L2 logistic regression; the CAV is the decision boundary's normal in activation space."""
    x_train = torch.cat(train, dim=1)
    z_train, z_test, scale = _standardise(x_train, torch.cat(test, dim=1))
    labels = torch.cat([torch.ones(train[0].shape[1]), -torch.ones(train[1].shape[1])])
    labels = labels.to(device=x_train.device, dtype=torch.float64).expand(len(x_train), -1)
    gram = (z_train @ z_train.transpose(1, 2)).to(torch.float64)
    dual, intercept = _newton_logistic(gram, labels, l2)
    weights = torch.einsum("bn,bnf->bf", dual.to(z_train.dtype), z_train)  # w = Z^T a
    scores = torch.einsum("bnf,bf->bn", z_test, weights) + intercept.to(z_test.dtype)[:, None]
    n_test_pos = test[0].shape[1]
    accuracy = _accuracy(scores[:, :n_test_pos], scores[:, n_test_pos:])
    return _unit(weights * scale), accuracy


def _logistic_terms(
    gram: torch.Tensor, labels: torch.Tensor, dual: torch.Tensor, intercept: torch.Tensor, l2: float
) -> tuple[torch.Tensor, ...]:
    """Margins z = K a + b, dloss/dz, the loss curvature, and the residuals (r_a, r_b) of the optimum."""
    n = labels.shape[1]
    z = (gram @ dual[:, :, None]).squeeze(-1) + intercept[:, None]
    correct = torch.sigmoid(labels * z)
    dloss = -labels * (1 - correct)
    curvature = correct * (1 - correct)
    return z, curvature, dloss / n + l2 * dual, dloss.sum(1) / n


def _newton_logistic(
    gram: torch.Tensor, labels: torch.Tensor, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean softplus(-y z) + l2/2 a^T K a over (a, b), z = K a + b, for all B problems at once.

    The optimum satisfies r_a = dloss/dz / n + l2 a = 0 and r_b = sum(dloss/dz) / n = 0; each Newton step
    solves the (n+1) x (n+1) linearisation of these (non-singular for l2 > 0 even when K is singular)
    and is damped by a batched Armijo search.
    """
    batch, n = labels.shape
    dual = gram.new_zeros(batch, n)
    intercept = gram.new_zeros(batch)
    for _ in range(NEWTON_ITERATIONS):
        z, curvature, r_a, r_b = _logistic_terms(gram, labels, dual, intercept, l2)
        k_r = (gram @ r_a[:, :, None]).squeeze(-1)
        if float(((r_a * k_r).sum(1) + r_b**2).sqrt().max()) < NEWTON_TOLERANCE:
            break
        weighted = curvature[:, :, None] * gram / n
        jacobian = gram.new_zeros(batch, n + 1, n + 1)
        jacobian[:, :n, :n] = weighted + l2 * torch.eye(n, dtype=gram.dtype, device=gram.device)
        jacobian[:, :n, n] = curvature / n
        jacobian[:, n, :n] = weighted.sum(1)
        jacobian[:, n, n] = curvature.sum(1) / n
        step = torch.linalg.solve(jacobian, -torch.cat([r_a, r_b[:, None]], 1))
        slope = (k_r * step[:, :n]).sum(1) + r_b * step[:, n]
        t = _armijo_step(gram, labels, dual, z, step, slope, l2)
        dual = dual + t[:, None] * step[:, :n]
        intercept = intercept + t * step[:, n]
    return dual, intercept


def _armijo_step(
    gram: torch.Tensor,
    labels: torch.Tensor,
    dual: torch.Tensor,
    z: torch.Tensor,
    step: torch.Tensor,
    slope: torch.Tensor,
    l2: float,
) -> torch.Tensor:
    """Largest step size 2^-k with sufficient decrease, per problem (0 where none: converged).

    The objective along the step is cheap in closed form (margins move linearly, the penalty is a
    quadratic in t); the full step is tried first and the ladder of halvings only where it fails.
    """
    n = labels.shape[1]
    k_step = (gram @ step[:, :n, None]).squeeze(-1)
    along = _LineObjective(
        labels=labels,
        z=z,
        dz=k_step + step[:, n : n + 1],
        quadratic=torch.stack(
            [
                (dual * (gram @ dual[:, :, None]).squeeze(-1)).sum(1),
                (dual * k_step).sum(1),
                (step[:, :n] * k_step).sum(1),
            ],
            dim=1,
        ),  # fmt: skip
        l2=l2,
    )
    current = along.at(torch.zeros(1, dtype=z.dtype, device=z.device))[:, 0]
    sizes = torch.ones_like(slope)
    full = along.at(torch.ones(1, dtype=z.dtype, device=z.device))[:, 0] <= current + ARMIJO * slope
    retry = (~full).nonzero().squeeze(1)
    if len(retry):
        ladder = STEP_SIZES.to(z.device)
        values = along.subset(retry).at(ladder)
        accepted = values <= current[retry, None] + ARMIJO * ladder * slope[retry, None]
        first = accepted.to(torch.int8).argmax(1)
        sizes[retry] = torch.where(accepted.any(1), ladder[first], torch.zeros_like(first, dtype=z.dtype))
    return sizes


@dataclass(frozen=True)
class _LineObjective:
    """mean softplus(-y (z + t dz)) + l2/2 (aKa + 2t aKs + t^2 sKs): the objective along a Newton step."""

    labels: torch.Tensor
    z: torch.Tensor
    dz: torch.Tensor
    quadratic: torch.Tensor  # B x 3: aKa, aKs, sKs
    l2: float

    def at(self, sizes: torch.Tensor) -> torch.Tensor:
        """Objective for every problem and step size (B x T)."""
        margins = self.labels[:, None] * (self.z[:, None] + sizes[None, :, None] * self.dz[:, None])
        loss = torch.logaddexp(torch.zeros_like(margins), -margins).mean(-1)
        a_k_a, a_k_s, s_k_s = self.quadratic.unbind(1)
        return loss + self.l2 / 2 * (a_k_a[:, None] + 2 * sizes * a_k_s[:, None] + sizes**2 * s_k_s[:, None])

    def subset(self, index: torch.Tensor) -> _LineObjective:
        return _LineObjective(
            self.labels[index], self.z[index], self.dz[index], self.quadratic[index], self.l2
        )


# ---------------------------------------------------------------- captum reference


def _fit_sgd(
    positives: torch.Tensor,
    negatives: torch.Tensor,
    seeds: torch.Tensor | Sequence[int],
    test_fraction: float,
) -> CavFit:
    """captum's seeded DefaultClassifier per problem: the current path, one fit at a time on the CPU.

    Its held-out split is captum's (pooled rows, shuffled by `random` seeded with the fit's seed).
    """
    from ticketlens.explanations.tcav import make_classifier, train_cav

    seed_list = [int(s) for s in _as_seed_array(seeds, len(positives)).tolist()]
    cavs, accuracy = [], []
    for positive, negative, seed in zip(positives.cpu(), negatives.cpu(), seed_list, strict=True):
        classifier = make_classifier(seed)
        classifier.train_and_eval = functools.partial(
            classifier.train_and_eval, test_split_ratio=test_fraction
        )
        cav, held_out = train_cav(positive, negative, classifier)
        cavs.append(cav)
        accuracy.append(held_out)
    stacked = _unit(torch.stack(cavs).to(device=positives.device, dtype=positives.dtype))
    return CavFit(stacked, torch.tensor(accuracy, dtype=torch.float32, device=positives.device), "sgd")


# ---------------------------------------------------------------- TCAV scores


def tcav_scores(gradients: torch.Tensor | Sequence[torch.Tensor], cavs: torch.Tensor) -> torch.Tensor:
    """TCAV scores B x K: per CAV and class, the share of the class's inputs (gradients N_k x F, or one
    K x N x F tensor) whose directional derivative gradient . CAV is positive (captum's sign_count)."""
    columns = [((g.to(cavs.dtype) @ cavs.T) > 0).to(torch.float32).mean(0) for g in gradients]
    return torch.stack(columns, dim=1)
