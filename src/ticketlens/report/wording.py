"""Shared wording of the report's sentences: names of methods, metrics and branches, and how numbers,
p-values and intervals are written."""

from __future__ import annotations

from typing import Any

import numpy as np

from ticketlens.study import BRANCH_NOUNS, METHOD_NAMES, SIMILARITY_METRICS


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def metric_name(metric: str) -> str:
    return SIMILARITY_METRICS.get(metric, metric)


def branch_noun(branch: str) -> str:
    return BRANCH_NOUNS.get(branch, branch)


def finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(value))


def format_p(p: float | None) -> str:
    """'p = 0.003' or 'p < 1e-4' (p-values that small are not resolved by a handful of seeds anyway)."""
    if not finite(p):
        return "p n/a"
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def format_percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.3g}%"


def format_accuracy(value: float | None) -> str:
    return "n/a" if not finite(value) else f"{100 * value:.2f}%"


def format_points(value: float | None) -> str:
    """An accuracy difference in percentage points, with its sign."""
    return "n/a" if not finite(value) else f"{100 * value:+.2f}"


def interval_text(low: float | None, high: float | None, scale: float = 1.0, unit: str = "") -> str:
    if not (finite(low) and finite(high)):
        return "no interval"
    if scale == 100.0:
        return f"{100 * low:+.2f} to {100 * high:+.2f}{unit}"
    return f"{scale * low:.3g} to {scale * high:.3g}{unit}"
