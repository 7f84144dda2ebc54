"""`late_val_gain`: what the last quarter of a round still gained (issue 20: nets stopped while climbing)."""

from __future__ import annotations

import math

import pytest

from ticketlens.lottery.training import late_val_gain


def curve(*accuracies: float) -> list[dict[str, float]]:
    return [
        {"iteration": 100 * (i + 1), "val_loss": 1.0 - a, "val_accuracy": a} for i, a in enumerate(accuracies)
    ]


def test_a_net_stopped_while_climbing_shows_its_late_gain():
    # The seed: 51%, 75%, 80%, 95% at iterations 100-400; 75% of 400 is 300 (80%).
    assert late_val_gain(curve(0.51, 0.75, 0.80, 0.95)) == pytest.approx(0.15)


def test_a_plateau_gains_about_nothing_whatever_came_before():
    assert late_val_gain(curve(0.2, 0.6, 0.9, 0.97, 0.98, 0.98, 0.981, 0.98)) == pytest.approx(0.0)


def test_one_evaluation_is_not_a_curve():
    assert math.isnan(late_val_gain(curve(0.9)))
