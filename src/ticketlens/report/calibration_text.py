"""Sentences of the TCAV test and its calibration: how many distinct held-out sets it rests on, and bounds
that take a set (and a seed), not a row, as the unit."""

from __future__ import annotations

from typing import Any

from ticketlens.report.wording import finite, format_percent


def calibration_sentences(findings: dict[str, Any]) -> list[str]:
    """How the TCAV test behaves on held-out random image sets run as concepts (its calibration)."""
    cal = findings.get("tcav_calibration") or {}
    alpha = findings.get("tcav_alpha", findings["alpha"])
    method = (
        "TCAV test: per concept, layer and class, the mean cosine between the concept's CAVs (one against each "
        "of K random counterparts) and the class's gradients is ranked against a permutation null of random "
        "sets drawn from the random pool together with the concept's own images, each treated exactly like "
        f"the concept; two-sided; Holm per ticket over concepts x layers x classes at alpha {alpha:g}; a "
        "concept whose CAV is not more accurate than its null's is not learnable at that layer and never "
        "significant. Scores shown are TCAV scores (share of inputs with a positive directional derivative)."
    )
    if not cal.get("rows"):
        return [method, "No calibration sets were run (explanations.tcav.n_calibration_sets is 0)."]
    return [method, calibration_counts(cal, alpha)]


def calibration_counts(cal: dict[str, Any], alpha: float) -> str:
    """How many distinct sets the calibration rests on, its rates, and bounds that treat a set (and a seed),
    not a row, as the unit."""
    distinct = cal.get("distinct_sets", cal["sets"])
    runs = (
        f"{distinct} distinct held-out random image {'set' if distinct == 1 else 'sets'}, each run as a concept "
        f"on all {cal['tickets']} tickets ({cal['sets']} set-ticket runs, {cal['rows']} layer-class rows)"
        if "tickets" in cal
        else f"{cal['sets']} held-out random image set runs ({cal['rows']} layer-class rows)"
    )
    text = (
        f"Calibration: {runs}, were rejected in {format_percent(cal['rate_uncorrected'])} of rows before "
        f"correction (a calibrated test: about {format_percent(alpha)}"
    )
    if finite(cal.get("bootstrap_upper_99")):
        text += (
            f"; 99% upper bound {format_percent(cal['bootstrap_upper_99'])} by a two-way bootstrap over the "
            f"{distinct} distinct sets and {cal['seeds']} seeds, since rows of one set or one seed are not independent"
        )
    text += (
        f"), {format_percent(cal['rate_gated'])} with the learnability gate, and "
        f"{format_percent(cal['rate_holm'])} after Holm"
    )
    if "distinct_sets_flagged_holm" in cal:
        text += (
            f"; {cal['distinct_sets_flagged_holm']} of the {distinct} distinct sets had a significant row on any "
            f"ticket (exact 99% upper bound on that share: {format_percent(cal['distinct_sets_flagged_upper_99'])})"
        )
    if distinct < 10:
        text += (
            f". With {distinct} distinct sets these bounds are wide; more sets "
            "(`explanations.tcav.n_calibration_sets`) tighten them"
        )
    return text + "."
