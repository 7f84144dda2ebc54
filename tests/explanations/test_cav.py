"""Batched CAV fitting: agreement with scikit-learn, FastCAV's closed form, the Gram form against feature
space, seeds, scores, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from ticketlens.explanations import sgd_reference
from ticketlens.explanations.cav import (
    L2,
    LayerRows,
    class_scores,
    fit_cavs,
    fit_rows,
    fit_seed,
    held_out_split,
    tcav_scores,
)

BATCHED = ["logistic", "fastcav"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def two_sets(problems: int, n: int, features: int, shift: float, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Positives N(shift * e, I) and negatives N(0, I) per problem, e a random unit direction each."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(problems, 1, features, generator=g), dim=-1)
    positives = torch.randn(problems, n, features, generator=g) + shift * direction
    negatives = torch.randn(problems, n + 3, features, generator=g)
    return positives, negatives


def sklearn_reference(
    positives: torch.Tensor, negatives: torch.Tensor, seeds: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """sklearn LogisticRegression (lbfgs: intercept unpenalised, C = 1 / (l2 n)) on the same split."""
    from sklearn.linear_model import LogisticRegression

    split = held_out_split(seeds, positives.shape[1], negatives.shape[1])
    cavs, accuracy = [], []
    for b in range(len(seeds)):
        pos, neg = positives[b].double().numpy(), negatives[b].double().numpy()
        x_train = np.concatenate([pos[split.train_positive[b]], neg[split.train_negative[b]]])
        x_test = np.concatenate([pos[split.test_positive[b]], neg[split.test_negative[b]]])
        y_train = np.r_[np.ones(split.train_positive.shape[1]), np.zeros(split.train_negative.shape[1])]
        y_test = np.r_[np.ones(split.test_positive.shape[1]), np.zeros(split.test_negative.shape[1])]
        model = LogisticRegression(C=1 / (L2 * len(y_train)), tol=1e-12, max_iter=100_000)
        model.fit(x_train, y_train)
        cavs.append(model.coef_[0] / np.linalg.norm(model.coef_[0]))
        accuracy.append((model.predict(x_test) == y_test).mean())
    return np.array(cavs), np.array(accuracy)


@pytest.mark.parametrize(
    ("n", "features", "shift"),
    [(20, 40, 4.0), (40, 3, 0.7)],
    ids=["separable: more features than rows", "overlapping: few features"],
)
def test_logistic_agrees_with_sklearn(n: int, features: int, shift: float) -> None:
    positives, negatives = two_sets(6, n, features, shift)
    seeds = list(range(10, 16))
    fit = fit_cavs(positives, negatives, "logistic", seeds)
    cavs, accuracy = sklearn_reference(positives, negatives, seeds)
    cosine = (fit.cavs.double().numpy() * cavs).sum(1)
    assert cosine.min() > 0.99, cosine
    np.testing.assert_allclose(fit.accuracy.double().numpy(), accuracy, rtol=1e-6)  # same held-out counts


def test_fastcav_is_the_closed_form() -> None:
    # identical rows: the means, and so the CAV, do not depend on the held-out split
    positives = torch.tensor([[[2.0, 0.0]] * 4])
    negatives = torch.tensor([[[0.0, 1.0]] * 7])
    fit = fit_cavs(positives, negatives, "fastcav", [3])
    torch.testing.assert_close(fit.cavs[0], torch.tensor([2.0, -1.0]) / 5**0.5)
    assert fit.accuracy.item() == 1.0
    # varied rows: the paper's formula on the training rows, threshold at the midpoint of the class means
    positives, negatives = two_sets(1, 9, 3, 1.0, seed=5)
    fit = fit_cavs(positives, negatives, "fastcav", [7])
    split = held_out_split([7], 9, 12)
    pos_train, neg_train = positives[0, split.train_positive[0]], negatives[0, split.train_negative[0]]
    global_mean = torch.cat([pos_train, neg_train]).mean(0)
    cav = (pos_train - global_mean).mean(0)
    cav = cav / cav.norm()
    torch.testing.assert_close(fit.cavs[0], cav)
    midpoint = (pos_train.mean(0) + neg_train.mean(0)) / 2
    right = torch.cat(
        [
            (positives[0, split.test_positive[0]] - midpoint) @ cav > 0,
            (negatives[0, split.test_negative[0]] - midpoint) @ cav <= 0,
        ]
    )
    assert fit.accuracy.item() == pytest.approx(right.float().mean().item())


@pytest.mark.parametrize("method", BATCHED)
def test_same_seeds_give_bitwise_equal_fits(method: str) -> None:
    positives, negatives = two_sets(5, 15, 12, 1.0)
    first = fit_cavs(positives, negatives, method, [1, 2, 3, 4, 5])
    again = fit_cavs(positives, negatives, method, torch.tensor([1, 2, 3, 4, 5]))
    assert torch.equal(first.cavs, again.cavs) and torch.equal(first.accuracy, again.accuracy)
    other = fit_cavs(positives, negatives, method, [6, 7, 8, 9, 10])
    assert not torch.equal(first.cavs, other.cavs)


def test_seeds_pick_the_held_out_split() -> None:
    same = held_out_split([11, 11], 30, 30)
    assert torch.equal(same.test_positive[0], same.test_positive[1])
    split = held_out_split(list(range(50)), 30, 30)
    assert split.test_positive.shape == (50, 9) and split.train_negative.shape == (50, 21)
    assert len({tuple(row.tolist()) for row in split.test_positive}) == 50
    for train, test in (
        (split.train_positive, split.test_positive),
        (split.train_negative, split.test_negative),
    ):
        assert torch.equal(torch.cat([train, test], 1).sort(1).values, torch.arange(30).expand(50, -1))


def test_fit_seeds_depend_on_every_part_of_the_fit() -> None:
    base = fit_seed(0, "stripes", "random_3", "features.relu2")
    assert base == fit_seed(0, "stripes", "random_3", "features.relu2")
    others = {fit_seed(1, "stripes", "random_3", "features.relu2"), fit_seed(0, "dots", "random_3", "features.relu2"),
              fit_seed(0, "stripes", "random_4", "features.relu2"), fit_seed(0, "stripes", "random_3", "features.relu4")}  # fmt: skip
    assert base not in others and len(others) == 4 and 0 <= base < 2**63


@pytest.mark.parametrize("method", [*BATCHED, "sgd"])
def test_cavs_are_unit_vectors_towards_the_positives(method: str) -> None:
    positives, negatives = two_sets(3, 30, 8, 6.0)
    fit = fit_cavs(positives, negatives, method, [0, 1, 2])
    torch.testing.assert_close(fit.cavs.norm(dim=1), torch.ones(3))
    assert (torch.einsum("bnf,bf->bn", positives - negatives.mean(1, keepdim=True), fit.cavs) > 0).all()
    assert (fit.accuracy >= 0.9).all()


def test_sgd_is_captums_seeded_classifier() -> None:
    positives, negatives = two_sets(3, 12, 6, 1.0)
    fit = fit_cavs(positives, negatives, "sgd", [sgd_reference.CAV_SEED] * 3)
    for b in range(3):
        cav, accuracy = sgd_reference.train_cav(positives[b], negatives[b], sgd_reference.make_classifier())
        torch.testing.assert_close(fit.cavs[b], cav / cav.norm(), rtol=0, atol=0)
        assert fit.accuracy[b].item() == pytest.approx(accuracy)


def shared_rows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """40 activation rows (the first 20 shifted: a concept), 9 input gradients of 3 classes, and 6 problems:
    random 10-row subsets of the first 30 rows, each against the last 10 rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 12, generator=g)
    x[:20] += 1.5 * torch.nn.functional.normalize(torch.randn(12, generator=g), dim=0)
    gradients = torch.randn(9, 12, generator=g)
    positive = torch.stack([torch.randperm(30, generator=g)[:10] for _ in range(6)])
    negative = torch.arange(30, 40).expand(6, -1)
    return x, gradients, positive, negative, torch.arange(9) % 3


@pytest.mark.parametrize("method", [*BATCHED, "sgd"])
def test_gram_form_equals_feature_space(method: str) -> None:
    x, gradients, positive, negative, classes = shared_rows()
    seeds = [fit_seed(0, f"set_{b}", "random_0", "layer") for b in range(6)]
    rows = LayerRows.build(x, gradients, keep_features=method == "sgd")
    fit = fit_rows(rows, positive, negative, method, seeds)
    explicit = fit_cavs(x[positive], x[negative], method, seeds)
    # w . g = |w| (unit CAV . g): the directional derivatives of the same CAVs
    expected = fit.norm[:, None] * (explicit.cavs.double() @ gradients.double().T)
    torch.testing.assert_close(fit.derivatives, expected, rtol=1e-4, atol=1e-5)  # float32 Gram
    torch.testing.assert_close(fit.accuracy, explicit.accuracy)
    scores = class_scores(fit.derivatives, classes, [0, 1, 2])
    per_class = [gradients[classes == k] for k in range(3)]
    torch.testing.assert_close(scores.float(), tcav_scores(per_class, explicit.cavs.float()))


def test_sgd_rows_need_features() -> None:
    x, gradients, positive, negative, _ = shared_rows()
    with pytest.raises(ValueError, match="keep_features"):
        fit_rows(LayerRows.build(x, gradients), positive, negative, "sgd", list(range(6)))


def test_tcav_scores_are_captum_sign_counts() -> None:
    g = torch.Generator().manual_seed(0)
    gradients = [torch.randn(n, 10, generator=g) for n in (7, 12, 5)]
    cavs = torch.randn(4, 10, generator=g)
    scores = tcav_scores(gradients, cavs)
    expected = [[float((grads @ cav > 0).float().mean()) for grads in gradients] for cav in cavs]
    torch.testing.assert_close(scores, torch.tensor(expected))
    stacked = torch.randn(3, 6, 10, generator=g)
    torch.testing.assert_close(tcav_scores(stacked, cavs), tcav_scores(list(stacked), cavs))


def test_batched_methods_import_neither_sklearn_nor_captum() -> None:
    code = (
        "import sys, torch\n"
        "from ticketlens.explanations.cav import fit_cavs\n"
        "for method in ('logistic', 'fastcav'):\n"
        "    fit_cavs(torch.randn(2, 9, 4), torch.randn(2, 9, 4), method, [0, 1])\n"
        "assert not {'sklearn', 'captum'} & set(sys.modules), sorted({'sklearn', 'captum'} & set(sys.modules))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rejects_bad_inputs() -> None:
    positives, negatives = two_sets(2, 6, 3, 1.0)
    with pytest.raises(ValueError, match="unknown CAV method"):
        fit_cavs(positives, negatives, "svm", [0, 1])
    with pytest.raises(ValueError, match="one seed per problem"):
        fit_cavs(positives, negatives, "fastcav", [0])
    with pytest.raises(ValueError, match="hold out"):
        fit_cavs(positives[:, :2], negatives, "fastcav", [0, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", BATCHED)
def test_fits_on_the_tensors_device(method: str) -> None:
    positives, negatives = two_sets(4, 20, 16, 1.5)
    on_cpu = fit_cavs(positives, negatives, method, [0, 1, 2, 3])
    on_gpu = fit_cavs(positives.cuda(), negatives.cuda(), method, [0, 1, 2, 3])
    assert on_gpu.cavs.is_cuda and on_gpu.accuracy.is_cuda
    torch.testing.assert_close(on_gpu.cavs.cpu(), on_cpu.cavs, rtol=1e-4, atol=1e-4)
