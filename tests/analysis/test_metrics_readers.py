"""Readers of metrics.json take missing values (JSON null, e.g. a loss that was not finite) as NaN."""

from __future__ import annotations

import math

from ticketlens.analysis.summary import metrics_columns


def test_null_test_loss_is_nan_not_a_crash() -> None:
    metrics = {
        "remaining_fraction": 0.4,
        "test_accuracy": 0.1,
        "test_loss": None,
        "early_stop_iteration": 100,
    }
    columns = metrics_columns(metrics)
    assert math.isnan(columns["test_loss"])
    assert columns["test_accuracy"] == 0.1 and columns["early_stop_iteration"] == 100.0
    assert math.isnan(metrics_columns({"remaining_fraction": 1.0, "test_accuracy": 0.9})["test_loss"])
