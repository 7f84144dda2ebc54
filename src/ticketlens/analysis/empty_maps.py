"""Maps with no positive cell, as their own effect beside consistency.

The rule, one for every pair (stated in the report): a map with no positive cell has no ranking and no top
set, so a pair with exactly one such map scores what `explanations.compare` documents (rank correlation
0, what unrelated maps score on average; IoU 0) and a pair with two scores 1; every pair is kept in the
headline means. Pruning can raise consistency's fall two ways (maps that disagree, or maps that are empty),
so the findings separate them:

- consistency on the pairs without an empty map, against the ceiling on dense seed pairs without one;
- the share of pairs with an empty map, against the same share among dense seed pairs (the ceiling's),
  with the same jackknifed difference and one-sided test as drift (more empty pairs than dense seeds have).

Per ticket the pairs are (ticket map, own dense net's map) per probe image; for the ceiling (dense net of
seed a, dense net of seed b). Pure functions on tables and arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ticketlens.analysis import inference, power
from ticketlens.explanations.compare import compare_maps
from ticketlens.study import (
    DENSE_ROUND,
    HEADLINE_METRIC,
    METRIC_RANGES,
    SIMILARITY_METRICS,
    TICKET,
    FindingsSettings,
)

EMPTY_SHARE = "pairs_empty_{method}"  # summary column: share of (ticket, own dense) pairs with an empty map
NONEMPTY = "nonempty_{method}_{metric}"  # summary column: consistency over the pairs without one


def empty_pair_columns(consistency: pd.DataFrame, own: pd.DataFrame, dense: pd.DataFrame) -> dict[str, float]:
    """Per method, for one ticket vs its own dense net: the share of probe pairs with an empty map and each
    metric's mean over the other pairs (NaN when every pair has one). `own` and `dense` are saliency.csv
    tables (probe, method, empty)."""
    flags = own[["probe", "method", "empty"]].merge(
        dense[["probe", "method", "empty"]], on=["probe", "method"], suffixes=("", "_dense")
    )
    flags["pair_empty"] = flags["empty"].astype(bool) | flags["empty_dense"].astype(bool)
    pairs = consistency[consistency["reference"] == "dense"].merge(
        flags[["probe", "method", "pair_empty"]], on=["probe", "method"]
    )
    out: dict[str, float] = {}
    for method, group in pairs.groupby("method"):
        out[EMPTY_SHARE.format(method=method)] = float(group["pair_empty"].mean())
        kept = group[~group["pair_empty"]]
        for metric in (m for m in SIMILARITY_METRICS if m in group):
            out[NONEMPTY.format(method=method, metric=metric)] = (
                float(kept[metric].mean()) if len(kept) else np.nan
            )
    return out


def no_positive_cell(maps: np.ndarray) -> np.ndarray:
    """Per map: True where no cell is positive (saliency.csv's `empty`, `explanations.saliency.empty_maps`)."""
    return ~(np.asarray(maps).reshape(len(maps), -1) > 0).any(axis=1)


def dense_pair_empty(maps_by_seed: dict[int, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Per dense seed pair x method: the share of probe pairs with an empty map (no positive cell) and each
    metric's mean over the pairs without one (the ceiling of `empty_pair_columns`)."""
    seeds = sorted(maps_by_seed)
    rows = []
    for i, seed in enumerate(seeds):
        for other in seeds[i + 1 :]:
            a, b = maps_by_seed[seed], maps_by_seed[other]
            for method in (m for m in a if m != "probe" and m in b):
                empty = no_positive_cell(a[method]) | no_positive_cell(b[method])
                scores = compare_maps(a[method], b[method])[~empty]
                means = scores.mean() if len(scores) else pd.Series(np.nan, index=scores.columns)
                rows.append({"seed": seed, "other_seed": other, "method": method, "empty_share": float(empty.mean()),
                             **means.to_dict()})  # fmt: skip
    return pd.DataFrame(rows)


def _pairs(ceiling: pd.DataFrame, method: str, column: str) -> dict[tuple[int, int], float]:
    if ceiling.empty or column not in ceiling:
        return {}
    part = ceiling[ceiling["method"] == method]
    return {
        (int(a), int(b)): float(v) for a, b, v in part[["seed", "other_seed", column]].itertuples(index=False)
    }


def _round_test(
    values: dict[int, float],
    pairs: dict[tuple[int, int], float],
    bounds: tuple[float, float],
    direction: int,
    alpha: float,
) -> dict[str, Any]:
    """Difference from the ceiling (jackknife over seeds, as drift) and its one-sided test in `direction`."""
    est = inference.difference_from_ceiling(values, pairs, 1 - 2 * alpha, bounds)
    p = est.p_above(0.0) if direction > 0 else est.p_below(0.0)
    return {
        "value": float(np.nanmean(list(values.values()))) if values else np.nan,
        "difference": est.estimate,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "se": est.se,
        "df": est.df,
        "n": est.n,
        "p": p,
        "significant": bool(np.isfinite(p) and p < alpha),
        "power": power.power_fields(est.estimate, est.se, est.df, est.n, 0.0, direction, alpha),
    }


def empty_map_findings(
    summary: pd.DataFrame, ceiling: pd.DataFrame, settings: FindingsSettings
) -> list[dict[str, Any]]:
    """Per method with empty-map columns, per pruned ticket round: the empty-pair share against the dense
    seed pairs' (one-sided: more), and the headline metric on pairs without an empty map against the
    ceiling on such dense pairs (one-sided: below)."""
    tickets = summary[(summary["branch"] == TICKET) & (summary["round"] > DENSE_ROUND)]
    out = []
    for method in sorted(c.split("_", 2)[2] for c in summary.columns if c.startswith("pairs_empty_")):
        share, kept = (
            EMPTY_SHARE.format(method=method),
            NONEMPTY.format(method=method, metric=HEADLINE_METRIC),
        )
        low, high = METRIC_RANGES.get(HEADLINE_METRIC, (-1.0, 1.0))
        per_round = []
        for r, group in tickets.groupby("round", sort=True):

            def values(column: str, frame: pd.DataFrame = group) -> dict[int, float]:
                return {
                    int(s): float(v)
                    for s, v in zip(frame["seed"], frame[column], strict=True)
                    if np.isfinite(v)
                }

            per_round.append({
                "round": int(r),
                "remaining": float(group["remaining_fraction"].mean()),
                "empty_share": _round_test(values(share), _pairs(ceiling, method, "empty_share"), (-1.0, 1.0), +1,
                                           settings.alpha),
                "nonempty_consistency": _round_test(values(kept), _pairs(ceiling, method, HEADLINE_METRIC),
                                                    (low - high, high - low), -1, settings.alpha),
            })  # fmt: skip
        out.append({"method": method, "metric": HEADLINE_METRIC, "per_round": per_round})
    return out
