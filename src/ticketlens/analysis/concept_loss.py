"""Concept loss as a test on the difference: which concepts tickets lose, and from which round.

For each concept x layer x class and pruned round, the ticket's TCAV effect (`effect`: the cosine statistic
minus its null mean) minus its own dense net's, paired over seeds, oriented so that negative means "less of
the dense net's use of the concept": the sign is that of the pair's mean effect, (ticket + dense) / 2 over
seeds. Under no change the ticket and dense effects are exchangeable, so that sum is independent of the
difference (for Gaussian noise exactly) and orienting by it does not bias the test, unlike orienting (or
selecting rows) by the dense net's own effect, which regresses towards zero in the ticket. A reversed
concept (ticket = -dense) has a pair mean near zero and is seen as "not determined", not as lost.

- lost from round r: the oriented difference is significantly below zero (one-sided t over seeds) at r
  and at every later round: a fixed sequence from the last round backwards (pruning only removes
  weights), each round's hypotheses Holm-corrected over every concept x layer x class;
- kept to round r: shown within +-`concept_margin` (two one-sided tests) at every round up to r, a fixed
  sequence forwards; each row's claim at level alpha on its own, not Holm over rows (with 4 seeds and
  tens of rows Holm leaves equivalence unreachable; a loss is the claim the ranking rests on, and it is
  familywise);
- else not determined.

This replaces the old list that compared significance *decisions* (majority vote over seeds of each net's
Holm + learnability call), which flagged a concept as lost when the gate flipped in two seeds although
its effect did not move (tests/analysis/test_concept_loss.py keeps that case). Pure functions on the TCAV
summary (`tcav_summary.csv` rows); no file access.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ticketlens.analysis import inference
from ticketlens.study import DENSE_ROUND, TICKET

KEY = ["concept", "layer", "target_class"]
LOST, KEPT = "lost", "kept"
EFFECT_BOUNDS = (-2.0, 2.0)  # a difference of two cosines minus their null means


def paired_differences(tcav: pd.DataFrame) -> pd.DataFrame:
    """Per concept x layer x class x pruned round x seed of the ticket branch: ticket effect, dense effect
    (round 0 of the same seed) and their difference."""
    tickets = tcav[tcav["branch"] == TICKET]
    dense = tickets[tickets["round"] == DENSE_ROUND][[*KEY, "seed", "effect"]]
    pruned = tickets[tickets["round"] > DENSE_ROUND][[*KEY, "seed", "round", "effect", "remaining_fraction"]]
    pairs = pruned.merge(dense, on=[*KEY, "seed"], suffixes=("", "_dense"), validate="many_to_one")
    return pairs.assign(difference=pairs["effect"] - pairs["effect_dense"])


def round_test(group: pd.DataFrame, alpha: float, margin: float) -> dict[str, Any]:
    """One row x round: the oriented paired difference over seeds, its interval and the two tests' p."""
    orientation = 1.0 if (group["effect"] + group["effect_dense"]).mean() >= 0 else -1.0
    est = inference.seed_mean((orientation * group["difference"]).tolist(), 1 - 2 * alpha, EFFECT_BOUNDS)
    p_within = max(est.p_above(-margin), est.p_below(margin))
    return {
        "round": int(group["round"].iloc[0]),
        "remaining": float(group["remaining_fraction"].mean()),
        "orientation": int(orientation),
        "dense_effect": float(group["effect_dense"].mean()),
        "effect": float(group["effect"].mean()),
        "difference": est.estimate,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "n": est.n,
        "p_lost": est.p_below(0.0),
        "p_kept": p_within if np.isfinite(p_within) else math.nan,
    }


def _holm_per_round(rows: list[dict[str, Any]], column: str, out: str) -> None:
    """Holm over every concept x layer x class at each round, of the fixed-sequence p in `column`."""
    for r in sorted({row["round"] for row in rows}):
        at = [row for row in rows if row["round"] == r]
        for row, p in zip(at, inference.holm([row[column] for row in at]), strict=True):
            row[out] = p


def _sequence_p(rounds: list[dict[str, Any]], column: str, backwards: bool) -> list[float]:
    """Fixed-sequence p of each round: the largest p of the rounds tested before it (and its own)."""
    ordered = list(reversed(rounds)) if backwards else rounds
    out, running = [], 0.0
    for row in ordered:
        p = row[column]
        running = max(running, p) if np.isfinite(p) else math.inf
        out.append(running if np.isfinite(running) else math.nan)
    return list(reversed(out)) if backwards else out


def concept_loss(tcav: pd.DataFrame, alpha: float, margin: float) -> dict[str, Any]:
    """findings.json `concept_loss`: per concept x layer x class its rounds (oriented difference, interval,
    p, verdict), the round it is lost from (or None), the last round shown kept, and its status; `ranking`:
    the lost rows, earliest loss first (then the largest loss at that round)."""
    empty = {"test": "", "alpha": alpha, "margin": margin, "rows": [], "ranking": [], "n_seeds": 0}
    if tcav is None or tcav.empty or "effect" not in tcav:
        return empty
    pairs = paired_differences(tcav)
    if pairs.empty:
        return empty
    rows, per_round = [], []
    for key, group in pairs.groupby(KEY, sort=True):
        rounds = [round_test(g, alpha, margin) for _, g in group.groupby("round", sort=True)]
        for row, lost, kept in zip(
            rounds, _sequence_p(rounds, "p_lost", True), _sequence_p(rounds, "p_kept", False), strict=True
        ):
            row["p_lost_sequence"], row["p_kept_sequence"] = lost, kept
        rows.append({**dict(zip(KEY, key, strict=True)), "rounds": rounds})
        per_round += rounds
    _holm_per_round(per_round, "p_lost_sequence", "p_lost_holm")
    for row in per_round:  # a kept claim is made per row at level alpha (see the module docstring)
        row["p_kept_holm"] = row["p_kept_sequence"]
    for row in rows:
        lost = _run(row["rounds"], "p_lost_holm", alpha, backwards=True)
        kept = _run(row["rounds"], "p_kept_holm", alpha, backwards=False)
        for r in row["rounds"]:
            r["verdict"] = (
                LOST if r["round"] in lost else KEPT if r["round"] in kept else inference.NOT_DETERMINED
            )
        last = max(r["round"] for r in row["rounds"])
        row["lost_from_round"] = min(lost) if lost else None
        row["kept_to_round"] = max(kept) if kept else DENSE_ROUND
        row["status"] = LOST if lost else KEPT if row["kept_to_round"] == last else inference.NOT_DETERMINED
        row["dense_effect"] = row["rounds"][0]["dense_effect"]
    ranking = sorted(
        (row for row in rows if row["status"] == LOST),
        key=lambda row: (row["lost_from_round"], _difference_at(row, row["lost_from_round"])),
    )
    return {
        "test": (
            "ticket minus dense TCAV effect, paired over seeds and oriented by the pair's mean effect; lost: "
            f"one-sided t-test below 0 at alpha {alpha:g}, fixed sequence from the last round backwards, Holm "
            f"over concept x layer x class per round; kept: within +-{margin:g} by two one-sided tests, fixed "
            "sequence forwards, per row"
        ),
        "alpha": alpha,
        "margin": margin,
        "n_seeds": int(pairs["seed"].nunique()),
        "rows": rows,
        "ranking": [
            {
                **{k: row[k] for k in KEY},
                "lost_from_round": row["lost_from_round"],
                "remaining": next(
                    r["remaining"] for r in row["rounds"] if r["round"] == row["lost_from_round"]
                ),
                "difference": _difference_at(row, row["lost_from_round"]),
                "dense_effect": row["dense_effect"],
            }
            for row in ranking
        ],  # fmt: skip
    }


def _run(rounds: list[dict[str, Any]], column: str, alpha: float, backwards: bool) -> list[int]:
    """The rounds of the sequence that reject, in testing order, up to the first that does not."""
    out = []
    for row in reversed(rounds) if backwards else rounds:
        if not (np.isfinite(row[column]) and row[column] < alpha):
            break
        out.append(row["round"])
    return out


def _difference_at(row: dict[str, Any], r: int) -> float:
    return next(x["difference"] for x in row["rounds"] if x["round"] == r)
