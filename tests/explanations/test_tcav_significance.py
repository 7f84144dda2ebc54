"""The calibrated TCAV test: rank statistics, known answers, and calibration under the null.

The calibration tests run image sets that are just more random draws through the concept path and check
that the rejection rate stays at alpha (within a 99% binomial bound); the reference procedure (the
concept's K scores against a fixed-positive random-vs-random null in a t-test, what ticketlens did before)
fails the same check on simulated tickets, so the check can fail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import binom, ttest_ind

from ticketlens.explanations import tcav
from ticketlens.explanations.cav import class_scores, fit_rows, fit_seed
from ticketlens.explanations.tcav_significance import LayerBase, TicketBase, concept_test, null_draws
from ticketlens.explanations.tcav_significance import TestDesign as Design
from ticketlens.explanations.tcav_stats import (
    decide,
    equal_tailed_p,
    holm,
    null_bounds,
    null_draws_needed,
    summarize_tcav,
)

ALPHA = 0.05
METHODS = ["fastcav", "logistic"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def upper_bound(trials: int, alpha: float = ALPHA) -> float:
    """Largest rejection rate a test at level alpha shows in `trials` with probability 0.99."""
    return float(binom.ppf(0.99, trials, alpha)) / trials


# ---------------------------------------------------------------- rank statistics


def test_holm_by_hand() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm(np.array([0.5, 0.9])), [1.0, 1.0])
    assert holm(np.array([])).shape == (0,)


def test_equal_tailed_p_by_hand() -> None:
    null = np.arange(1, 20, dtype=float)[:, None] / 20  # N = 19 values 0.05 .. 0.95
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
        np.testing.assert_array_equal(excluded, p <= ALPHA, err_msg=f"N = {count}")
    assert null_draws_needed(40, ALPHA) == 1599 and 2 / (1 + 1599) <= ALPHA / 40 < 2 / 1599


def test_gate_keeps_a_non_learnable_concept_from_being_significant() -> None:
    table = pd.DataFrame(
        {
            "concept": ["learnable", "not learnable"],
            "p_value": 0.001,
            "side": [1, -1],
            "p_learnable": [0.01, 0.4],
        }
    ).set_index("concept", drop=False)
    decided = decide(table, ALPHA)
    assert decided.loc["learnable", "significant"] and decided.loc["learnable", "direction"] == "up"
    assert not decided.loc["not learnable", "significant"] and not decided.loc["not learnable", "learnable"]
    assert decided.loc["not learnable", "direction"] == ""
    assert decided.loc["not learnable", "p_holm"] == pytest.approx(0.002)  # still in Holm's family


def test_null_draws_are_seeded_distinct_subsets() -> None:
    draws = null_draws(3, "stripes", union=50, size=10, count=200)
    assert draws.shape == (200, 10)
    assert all(len(set(row.tolist())) == 10 for row in draws) and draws.min() >= 0 and draws.max() < 50
    assert torch.equal(draws, null_draws(3, "stripes", 50, 10, 200))
    assert not torch.equal(draws, null_draws(4, "stripes", 50, 10, 200))
    assert not torch.equal(draws, null_draws(3, "dots", 50, 10, 200))
    counts = torch.bincount(draws.flatten(), minlength=50).float()
    assert counts.min() > 0.5 * counts.mean()  # every position of the union is drawn (no fixed pool)


# ---------------------------------------------------------------- simulated tickets


def simulated_base(
    g: torch.Generator, gradient_means: torch.Tensor, seed: int, k: int = 4, m: int = 10, pool_sets: int = 8
) -> TicketBase:
    """One layer of a simulated ticket: activations N(0, I), K = 4 counterparts and a pool of 8 sets of
    M = 10 rows, 20 input gradients per class around `gradient_means` (C x F)."""
    features = gradient_means.shape[1]
    activations = torch.randn((k + pool_sets) * m, features, generator=g)
    gradients = torch.cat([mean + torch.randn(20, features, generator=g) for mean in gradient_means])
    classes = list(range(len(gradient_means)))
    return TicketBase(
        ticket_seed=seed,
        layers={"layer": LayerBase.build(activations, gradients, keep_features=False)},
        counterpart_names=[f"random_{i}" for i in range(k)],
        set_size=m,
        pool_size=pool_sets * m,
        input_classes=torch.arange(len(classes)).repeat_interleave(20),
        classes=classes,
    )


@pytest.mark.parametrize("method", METHODS)
def test_known_answer_up_and_down(method: str) -> None:
    # The concept is N(3 d, I): class 0's gradients point along d, class 1's against it.
    g = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    base = simulated_base(g, torch.stack([2 * direction, -2 * direction]), seed=0)
    concept = {"layer": torch.randn(10, 16, generator=g) + 3 * direction}
    rows = concept_test(base, "concept", concept, Design(method, 4, 199, ALPHA))
    table = summarize_tcav(rows, ALPHA).set_index("target_class")
    assert table["learnable"].all() and (table["cav_accuracy"] > table["null_accuracy"] + 0.2).all()
    assert table.loc[0, "significant"] and table.loc[0, "direction"] == "up", table
    assert table.loc[1, "significant"] and table.loc[1, "direction"] == "down", table
    assert table.loc[0, "effect_low"] > 0 > table.loc[1, "effect_high"]  # the interval of the cosine effect
    assert (table["effect_low"] <= table["effect"]).all() and (table["effect"] <= table["effect_high"]).all()
    assert table.loc[0, "cosine"] > 0 > table.loc[1, "cosine"] and table.loc[0, "mean"] > table.loc[1, "mean"]


def reference_p_values(base: TicketBase, concept: dict[str, torch.Tensor], method: str) -> np.ndarray:
    """What ticketlens did before: the concept's K scores (against the K counterparts) and, as the null,
    counterpart 0 against counterparts 1..K-1, compared per class by a two-sided t-test (uncorrected)."""
    k, m = len(base.counterpart_names), base.set_size
    p_values = []
    for layer, layer_base in base.layers.items():
        rows = layer_base.with_concept(concept[layer])
        own = torch.arange(len(rows) - len(concept[layer]), len(rows))
        blocks = torch.arange(k * m).view(k, m)
        fits = {"concept": (own.expand(k, -1), blocks), "random_0": (blocks[0].expand(k - 1, -1), blocks[1:])}
        scores = {}
        for name, (positive, negative) in fits.items():
            seeds = [fit_seed(base.ticket_seed, name, f"random_{i}", layer) for i in range(len(negative))]
            fit = fit_rows(rows, positive, negative, method, seeds)
            scores[name] = class_scores(fit.derivatives, base.input_classes, base.classes).numpy()
        with np.errstate(all="ignore"):
            p = ttest_ind(scores["concept"], scores["random_0"]).pvalue
        p_values.append(np.nan_to_num(p, nan=1.0))
    return np.concatenate(p_values)


@pytest.mark.parametrize("method", METHODS)
def test_calibrated_under_the_null_and_the_reference_test_is_not(method: str) -> None:
    tickets, classes = 150, 3
    draws = null_draws_needed(classes, ALPHA)  # Holm over 3 tests can reject: N = 119
    g = torch.Generator().manual_seed(1)
    new, old = [], []
    for ticket in range(tickets):
        base = simulated_base(g, torch.randn(classes, 16, generator=g), seed=ticket)
        concept = {"layer": torch.randn(10, 16, generator=g)}  # one more random draw: the null holds
        new.append(
            summarize_tcav(concept_test(base, "concept", concept, Design(method, 4, draws, ALPHA)), ALPHA)
        )
        old.append(reference_p_values(base, concept, method))
    table = pd.concat(new, keys=range(tickets), names=["ticket", "row"]).reset_index()
    rate = float((table["p_value"] <= ALPHA).mean())
    family_wise = float(table.groupby("ticket")["p_holm"].min().le(ALPHA).mean())
    old_rate = float((np.concatenate(old) <= ALPHA).mean())
    rows = len(table)
    assert ALPHA / 3 < rate <= upper_bound(rows), rate  # valid, and not trivially conservative
    assert family_wise <= upper_bound(tickets), family_wise
    assert table["significant"].mean() <= upper_bound(rows)
    assert table["learnable"].mean() <= upper_bound(rows)
    assert old_rate > upper_bound(rows), old_rate  # the same check fails the reference test


# ---------------------------------------------------------------- a trained model


@pytest.fixture(scope="module")
def trained_net() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """convnet_mnist (width 0.5) trained on 16 px band images: layers of 8x16x16 and 16x8x8 features."""
    from helpers import make_toy_data
    from ticketlens.lottery.models import build_model

    data = make_toy_data(n=1600, classes=4, size=16, channels=1, seed=3)
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
    return model, x, x_test, y_test


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fastcav"])  # the default; logistic's calibration: the simulated test
def test_held_out_random_sets_are_not_flagged_on_a_trained_model(method: str, trained_net: tuple) -> None:
    """The study's calibration, in CI: disjoint random training-image sets, never in the pool, run through
    the job's own functions (`tcav.ticket_base`, `tcav_significance.concept_test`) as concepts."""
    from ticketlens.study import TcavSettings

    model, x, x_test, y_test = trained_net
    set_size, n_random, n_concepts, draws = 20, 16, 20, 399
    shuffled = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    images = x[shuffled[: (n_random + n_concepts) * set_size]].view(-1, set_size, *x.shape[1:])
    settings = TcavSettings(layers=None, n_random_sets=n_random, set_size=set_size, inputs_per_class=10, target_classes="all",
                            alpha=ALPHA, classifier=method, n_counterparts=5, n_null_draws=draws,
                            n_calibration_sets=n_concepts)  # fmt: skip
    inputs = torch.cat([x_test[y_test == k][:10] for k in range(4)]), torch.arange(4).repeat_interleave(10)
    layers = list(model.tcav_layers)
    randoms = [(f"random_{i}", images[i]) for i in range(n_random)]
    base = tcav.ticket_base(model, 0, layers, randoms, inputs, settings)
    assert [layer.activations.shape[1] for layer in base.layers.values()] == [8 * 16 * 16, 16 * 8 * 8]
    tables = []
    for i in range(n_random, n_random + n_concepts):
        activations = tcav.layer_activations(model, layers, images[i])
        tables.append(
            summarize_tcav(concept_test(base, f"random_{i}", activations, tcav.design_of(settings)), ALPHA)
        )
    table = pd.concat(tables, ignore_index=True)
    assert len(table) == n_concepts * len(layers) * 4
    assert (table["p_value"] <= ALPHA).mean() <= upper_bound(len(table))
    assert table["learnable"].mean() <= upper_bound(len(table))
    assert table.groupby("concept")["significant"].any().mean() <= upper_bound(n_concepts)
