"""The calibrated TCAV test: rank statistics, known answers, and calibration under the null.

The calibration tests simulate tickets where the "concept" is one more random set from the pool and
check that the rejection rate stays at alpha (within a 99% binomial bound), and that the old procedure
(`tcav.summarize_tcav`: the concept's R scores against a fixed-positive random-vs-random null in a
t-test) fails the same check, so the check can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binom

from ticketlens.explanations import tcav
from ticketlens.explanations.cav import fit_cavs, fit_seed, tcav_scores
from ticketlens.explanations.tcav_test import (
    LayerEvidence,
    calibrated_tcav_test,
    decide,
    draw_random_concepts,
    equal_tailed_p,
    holm,
    null_bounds,
    random_concepts_needed,
)

ALPHA = 0.05
METHODS = ["fastcav", "logistic"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # tiny batched kernels: extra threads only contend with the other test worker on a 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def upper_bound(trials: int, alpha: float = ALPHA) -> float:
    """Largest rejection rate a test at level alpha shows in `trials` with probability 0.99."""
    return float(binom.ppf(0.99, trials, alpha)) / trials


# ---------------------------------------------------------------- rank statistics


def test_holm_by_hand() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm(np.array([0.5, 0.9])), [1.0, 1.0])


def test_equal_tailed_p_by_hand() -> None:
    null = np.arange(1, 20, dtype=float)[:, None] / 20  # J = 19 values 0.05 .. 0.95
    p, side = equal_tailed_p(np.array([[1.0, 0.0, 0.5, 0.95]]), null[:, None])
    # top: p_up = 1/20, doubled; bottom likewise; middle: 10 values on each side; a tie counts against
    np.testing.assert_allclose(p[0], [0.1, 0.1, 1.0, 0.2])
    np.testing.assert_array_equal(side[0], [1, -1, 0, 1])


def test_effect_interval_excludes_zero_exactly_when_p_is_at_most_alpha() -> None:
    rng = np.random.default_rng(0)
    for count in (19, 39, 199, 250):
        null = rng.beta(2, 5, size=(count, 3)).round(2)  # skewed, with ties
        concept = np.linspace(0, 1, 101)[:, None].repeat(3, 1)
        p, _ = equal_tailed_p(concept, null[:, None])
        low, high = null_bounds(null, ALPHA)
        excluded = (concept - high > 1e-9) | (concept - low < -1e-9)  # beyond float noise
        np.testing.assert_array_equal(excluded, p <= ALPHA, err_msg=f"J = {count}")
    assert random_concepts_needed(40) == 1599 and 2 / (1 + 1599) <= ALPHA / 40 < 2 / 1599


def test_gate_keeps_a_non_learnable_concept_from_being_significant() -> None:
    table = pd.DataFrame(
        {
            "concept": ["learnable", "not learnable"],
            "layer": "l",
            "target_class": 0,
            "score": 1.0,
            "null_mean": 0.5,
            "effect": 0.5,
            "effect_low": 0.1,
            "effect_high": 0.6,
            "p_value": 0.001,
            "side": [1, -1],
            "cav_accuracy": [0.9, 0.5],
            "null_accuracy": 0.5,
            "p_learnable": [0.01, 0.4],
            "n_random_concepts": 999,
        }  # fmt: skip
    ).set_index("concept", drop=False)
    decided = decide(table, ALPHA)
    assert decided.loc["learnable", "significant"] and decided.loc["learnable", "direction"] == "up"
    assert not decided.loc["not learnable", "significant"] and not decided.loc["not learnable", "learnable"]
    assert decided.loc["not learnable", "direction"] == ""
    assert decided.loc["not learnable", "p_holm"] == pytest.approx(0.002)


# ---------------------------------------------------------------- synthetic tickets


def gaussian_ticket(
    g: torch.Generator, concept_shift: torch.Tensor, gradient_means: torch.Tensor, random_concepts: int
) -> LayerEvidence:
    """One layer of a simulated ticket: activations N(0, I) (the concept shifted by `concept_shift`),
    N = M = 10 per set, R = 4 counterparts, 20 gradients per class around `gradient_means` (K x F)."""
    features = concept_shift.numel()
    concept = torch.randn(10, features, generator=g) + concept_shift
    randoms = torch.randn(random_concepts, 10, features, generator=g)
    counterparts = torch.randn(4, 10, features, generator=g)
    gradients = [mean + torch.randn(20, features, generator=g) for mean in gradient_means]
    return LayerEvidence(
        {"concept": concept}, randoms, counterparts, gradients, list(range(len(gradient_means)))
    )


@pytest.mark.parametrize("method", METHODS)
def test_known_answer_up_and_down(method: str) -> None:
    # The concept is N(3 d, I): class 0's gradients point along d, class 1's against it. (A class with
    # gradients across d is no null case: the concept set's own noise tilts its CAVs, and the test may
    # rightly find that; the null is the calibration tests' business.)
    g = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    gradient_means = torch.stack([2 * direction, -2 * direction])
    evidence = {"layer": gaussian_ticket(g, 3 * direction, gradient_means, random_concepts=119)}
    table = calibrated_tcav_test(evidence, ticket_seed=0, method=method).set_index("target_class")
    assert table["learnable"].all() and (table["cav_accuracy"] > table["null_accuracy"] + 0.2).all()
    assert table.loc[0, "significant"] and table.loc[0, "direction"] == "up", table
    assert table.loc[1, "significant"] and table.loc[1, "direction"] == "down", table
    assert table.loc[0, "effect_low"] > 0 > table.loc[1, "effect_high"]
    assert (table["effect_low"] <= table["effect"]).all() and (table["effect"] <= table["effect_high"]).all()


def old_procedure_p_values(evidence: dict[str, LayerEvidence], ticket_seed: int, method: str) -> np.ndarray:
    """The current test's structure with the batched fitter: the concept against R counterparts, the null
    of random set 0 against counterparts 1..R-1, both through `tcav.summarize_tcav` (uncorrected p)."""
    rows = []
    for layer, e in evidence.items():
        counterparts = e.counterparts
        fits = {
            "concept": (e.concepts["concept"], counterparts, range(len(counterparts))),
            "random_0": (counterparts[0], counterparts[1:], range(1, len(counterparts))),
        }
        for name, (positive, negatives, indices) in fits.items():
            seeds = [fit_seed(ticket_seed, name, f"random_{i}", layer) for i in indices]
            fit = fit_cavs(positive.expand(len(negatives), -1, -1), negatives, method, seeds)
            scores = tcav_scores(e.gradients, fit.cavs)
            rows += [(name, layer, k, f"random_{i}", float(scores[r, k]), float(fit.accuracy[r]))
                     for r, i in enumerate(indices) for k in e.classes]  # fmt: skip
    table = pd.DataFrame(rows, columns=tcav.ROW_COLUMNS)
    null = table["concept"] == "random_0"
    return tcav.summarize_tcav(table[~null], table[null], ALPHA)["p_value"].to_numpy()


@pytest.mark.parametrize("method", METHODS)
def test_calibrated_under_the_null_and_the_old_test_is_not(method: str) -> None:
    tickets, classes = 200, 3
    random_concepts = random_concepts_needed(classes)  # Holm over 3 tests can reject: J = 119
    g = torch.Generator().manual_seed(1)
    new, old = [], []
    for ticket in range(tickets):
        means = torch.randn(classes, 16, generator=g)
        evidence = {"layer": gaussian_ticket(g, torch.zeros(16), means, random_concepts)}
        new.append(calibrated_tcav_test(evidence, ticket_seed=ticket, method=method))
        old.append(old_procedure_p_values(evidence, ticket, method))
    table = pd.concat(new, keys=range(tickets), names=["ticket", "row"]).reset_index()
    rate = float((table["p_value"] <= ALPHA).mean())
    family_wise = float(table.groupby("ticket")["p_holm"].min().le(ALPHA).mean())
    old_rate = float((np.concatenate(old) <= ALPHA).mean())
    rows = len(table)
    assert ALPHA / 2 < rate <= upper_bound(rows), rate  # valid, and not trivially conservative
    assert family_wise <= upper_bound(tickets), family_wise
    assert table["significant"].mean() <= upper_bound(rows)
    assert old_rate > max(2 * ALPHA, upper_bound(rows)), old_rate  # the same check fails the current test


# ---------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def trained_net() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """convnet_mnist (width 0.5) trained on 16 px band images: layers of 8x16x16 and 16x8x8 features."""
    from conftest import make_toy_data
    from ticketlens.models import build_model

    data = make_toy_data(n=800, classes=4, size=16, channels=1, seed=3)
    train, test = data.indices(0), data.indices(2)
    torch.manual_seed(0)
    model = build_model("convnet_mnist", 4, 1, 16, data.mean, data.std, width=0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    x, y = data.float_images(train), data.labels[train]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    for step in range(60):
        batch = order[(step * 32) % len(order) :][:32]
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    model.eval()
    x_test, y_test = data.float_images(test), data.labels[test]
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    assert accuracy > 0.9, accuracy
    return model, x, y, x_test, y_test


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_random_image_sets_are_not_flagged_on_a_trained_model(method: str, trained_net: tuple) -> None:
    model, x, _, x_test, y_test = trained_net
    layers = list(model.tcav_layers)
    set_size, n_counterparts, n_concepts, n_random = 20, 5, 20, 119
    shuffled = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    counterpart_rows, pool_rows = shuffled[: set_size * n_counterparts], shuffled[set_size * n_counterparts :]
    acts = tcav.layer_activations(model, layers, x)
    classes = list(range(4))
    evidence = {}
    for layer in layers:
        pool = acts[layer][pool_rows]
        # concepts: random sets drawn exactly like the random concepts, but separately (the null holds)
        concepts = draw_random_concepts(pool, n_concepts, set_size, seed=2)
        inputs = [x_test[y_test == k][:10] for k in classes]
        evidence[layer] = LayerEvidence(
            {f"random_image_set_{i}": c for i, c in enumerate(concepts)},
            draw_random_concepts(pool, n_random, set_size, seed=3),
            acts[layer][counterpart_rows].reshape(n_counterparts, set_size, -1),
            [tcav.layer_gradients(model, layer, inputs[k], k) for k in classes],
            classes,
        )
    assert [e.counterparts.shape[-1] for e in evidence.values()] == [8 * 16 * 16, 16 * 8 * 8]
    table = calibrated_tcav_test(evidence, ticket_seed=0, method=method)
    assert len(table) == n_concepts * len(layers) * len(classes)
    assert (table["p_value"] <= ALPHA).mean() <= upper_bound(len(table))
    assert table["learnable"].mean() <= upper_bound(len(table))
    assert not table["significant"].any()
    # the current test on the same concepts fails the same check
    old = [
        old_procedure_p_values(
            {layer: replace(e, concepts={"concept": e.concepts[name]}) for layer, e in evidence.items()},
            0,
            method,
        )
        for name in evidence[layers[0]].concepts
    ]
    assert (np.concatenate(old) <= ALPHA).mean() > upper_bound(len(table))
