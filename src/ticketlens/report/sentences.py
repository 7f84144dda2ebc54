"""The report's sentences, built from findings.json numbers only: the report makes no claim the analysis
did not compute, states every difference with its direction and interval, and says "not determined" when
the test does not decide."""

from __future__ import annotations

from typing import Any

import numpy as np

from ticketlens.analysis.tables import split_consistency_column
from ticketlens.report.power_text import (
    accuracy_power,
    drift_power,
    from_round,
    rounds_text,
    undecided_drift_rounds,
)
from ticketlens.study import (
    BRANCH_NOUNS,
    DENSE_ROUND,
    HEADLINE_METRIC,
    METHOD_NAMES,
    SIMILARITY_METRICS,
    TICKET,
)

# The sections of the study report that repeat a dataset's sentences (the others stay in its own report).
STUDY_SECTIONS = ("Accuracy", "When explanations drift", "Controls at equal sparsity", "TCAV calibration")


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def metric_name(metric: str) -> str:
    return SIMILARITY_METRICS.get(metric, metric)


def branch_noun(branch: str) -> str:
    return BRANCH_NOUNS.get(branch, branch)


def _finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(value))


def format_p(p: float | None) -> str:
    """'p = 0.003' or 'p < 1e-4' (p-values that small are not resolved by a handful of seeds anyway)."""
    if not _finite(p):
        return "p n/a"
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def format_percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.3g}%"


def format_accuracy(value: float | None) -> str:
    return "n/a" if not _finite(value) else f"{100 * value:.2f}%"


def format_points(value: float | None) -> str:
    """An accuracy difference in percentage points, with its sign."""
    return "n/a" if not _finite(value) else f"{100 * value:+.2f}"


def interval_text(low: float | None, high: float | None, scale: float = 1.0, unit: str = "") -> str:
    if not (_finite(low) and _finite(high)):
        return "no interval"
    if scale == 100.0:
        return f"{100 * low:+.2f} to {100 * high:+.2f}{unit}"
    return f"{scale * low:.3g} to {scale * high:.3g}{unit}"


def _where(round_: int | None, remaining: float | None) -> str:
    return f"round {round_} ({format_percent(remaining)} of weights remaining)"


def _side(difference: float) -> str:
    return "below" if difference < 0 else "above"


def _points(fraction: float) -> str:
    return f"{100 * fraction:g} point" + ("" if 100 * fraction == 1 else "s")


def _level(findings: dict[str, Any]) -> str:
    return f"{100 * (1 - 2 * findings['alpha']):g}%"


# --------------------------------------------------------------------------------------- accuracy


def _dense_sentence(findings: dict[str, Any]) -> str:
    m, n = findings["accuracy_match"], findings["n_seeds"]
    if _finite(m.get("dense_ci_low")) and findings.get("tested", n >= 3):
        noise = ", test-set noise included" if m.get("test_set_noise") else ""
        detail = (
            f"95% interval {format_accuracy(m['dense_ci_low'])} to {format_accuracy(m['dense_ci_high'])} "
            f"over {n} seeds{noise}"
        )
    else:
        detail = f"mean of {n} seed(s); numbers only, no interval: a test needs at least 3 seeds"
    return f"The dense network reaches {format_accuracy(m['dense_accuracy'])} test accuracy ({detail})."


def _untested_accuracy(m: dict[str, Any]) -> list[str]:
    values = ", ".join(f"round {r['round']} {format_points(r['difference'])}" for r in m["per_round"])
    return [f"Ticket minus dense accuracy, same seed, in points: {values or 'no pruned rounds'} (no test)."]


def accuracy_sentences(findings: dict[str, Any]) -> list[str]:
    m = findings["accuracy_match"]
    out = [_dense_sentence(findings)]
    if not findings.get("tested", findings["n_seeds"] >= 3):
        return out + _untested_accuracy(m) + [f"Test: {m['test']}."]
    margin = f"margin of {_points(m['margin'])}"
    rounds = {r["round"]: r for r in m["per_round"]}
    last, first = m["last_matching_round"], m["first_failing_round"]
    if last != DENSE_ROUND:
        row = rounds[last]
        out.append(
            f"Tickets match the dense accuracy (non-inferior within the {margin}) at every round up to "
            f"{_where(last, m['last_matching_remaining'])}; there the difference is "
            f"{format_points(row['difference'])} points ({_level(findings)} interval "
            f"{interval_text(row['ci_low'], row['ci_high'], 100, ' points')})."
        )
    if first is not None:
        row = rounds[first]
        where = from_round(first, findings["rounds"]).replace(
            f"round {first}", _where(first, m["first_failing_remaining"])
        )
        out.append(
            f"{_capitalise(where)}, tickets fail: accuracy is "
            f"{abs(100 * row['difference']):.2f} points {_side(row['difference'])} the dense net's "
            f"({_level(findings)} interval "
            f"{interval_text(row['ci_low'], row['ci_high'], 100, ' points')}), significantly beyond the {margin}."
        )
    undecided = [r for r in rounds if r > last and (first is None or r < first)]
    if undecided:
        out.append(
            f"Whether tickets match is not determined at {rounds_text(undecided)}: the interval includes the "
            f"{margin}; " + "; ".join(accuracy_power(rounds[r], m["margin"]) for r in undecided) + "."
        )
    return out + [f"Test: {m['test']}."]


# ------------------------------------------------------------------------------------------ drift


def _levels_sentence(d: dict[str, Any]) -> str:
    what = f"{method_name(d['method'])} consistency ({metric_name(d['metric'])})"
    ceiling = f"{d['ceiling']:.3f}" if _finite(d["ceiling"]) else "n/a (fewer than 2 dense seeds)"
    if _finite(d.get("ceiling_ci_low")):
        ceiling += f" (95% interval {interval_text(d['ceiling_ci_low'], d['ceiling_ci_high'])})"
    floor = f"{d['floor']:.3f}" if _finite(d["floor"]) else "n/a"
    return (
        f"{what}: the ceiling, a dense net compared with the dense nets of the other seeds, is {ceiling}; "
        f"the floor, a dense net compared with its randomised-weights copy, is {floor}."
    )


def _drift_sentence(d: dict[str, Any], findings: dict[str, Any]) -> str:
    rounds = {r["round"]: r for r in d["per_round"]}
    first, last = d["first_drift_round"], d["last_not_drifted_round"]
    if first is None:
        if d["relation"] == "not drifted in the rounds run":
            return (
                "Not drifted in the rounds run: at every round consistency with the own dense net is "
                "significantly above the ceiling minus the margin."
            )
        undecided = undecided_drift_rounds(d)
        if not undecided:
            return "Drift onset not determined: a drift at some round is not confirmed up to the last round."
        return (
            f"Drift not determined at {rounds_text([r['round'] for r in undecided])} (consistency with the own "
            "dense net neither significantly below the ceiling nor above it): "
            + "; ".join(drift_power(r, findings["consistency_margin"]) for r in undecided)
            + ". No drift was shown, which is not evidence that there is none."
        )
    row = rounds[first]
    where = from_round(first, findings["rounds"]).replace(
        f"round {first}", _where(first, d["first_drift_remaining"])
    )
    return (
        f"Tickets have drifted {where}: consistency with their "
        f"own dense net is {abs(row['difference']):.3f} {_side(row['difference'])} the ceiling "
        f"({_level(findings)} interval "
        f"{interval_text(row['ci_low'], row['ci_high'])}); the onset lies after round {last} and at or "
        f"before round {first}."
    )


def _relation_sentence(d: dict[str, Any]) -> str:
    relation, lag = d["relation"], d.get("lag_rounds")
    if relation in ("before", "with", "after"):
        return (
            f"Explanations drift {relation} accuracy fails (drift onset minus accuracy onset: "
            f"{lag[0]:+d} to {lag[1]:+d} rounds)."
        )
    if d["first_drift_round"] is None:
        return ""
    reason = (
        "the accuracy onset is not determined"
        if d["accuracy_first_failing_round"] is None
        else f"the onsets' intervals overlap (lag {lag[0]:+d} to {lag[1]:+d} rounds)"
    )
    return f"Whether explanations drift before, with or after accuracy fails is not determined: {reason}."


def _untested_drift(d: dict[str, Any]) -> str:
    values = ", ".join(f"round {r['round']} {r['consistency']:.3f}" for r in d["per_round"])
    return f"Consistency of tickets with their own dense net: {values} (numbers only, no test)."


def drift_sentences(findings: dict[str, Any]) -> list[str]:
    """Per method, the headline metric: ceiling and floor, drift onset and its relation to accuracy."""
    out = []
    for d in findings["drift"]:
        if d["metric"] != HEADLINE_METRIC:
            continue  # the tables list every metric; sentences keep to the headline metric per method
        out.append(_levels_sentence(d))
        if not findings.get("tested", True):
            out.append(_untested_drift(d))
            continue
        out += [s for s in (_drift_sentence(d, findings), _relation_sentence(d)) if s]
    return out


EMPTY_CAUSE = {
    "gradcam": "emptied by Grad-CAM's ReLU",
    "saliency": "an all-zero gradient; gradient saliency has no ReLU",
}


def empty_map_sentences(findings: dict[str, Any]) -> list[str]:
    counts = findings.get("empty_maps", {})
    out = []
    for method, rows in counts.items():
        total = sum(r["empty"] for r in rows)
        probes = sum(r["maps"] for r in rows)
        worst = max(rows, key=lambda r: r["empty"] / max(r["maps"], 1), default=None)
        text = f"{method_name(method)} maps with no positive cell ({EMPTY_CAUSE.get(method, 'empty')}): {total} of {probes}"
        if worst is not None and worst["empty"]:
            text += (
                f"; most at {branch_noun(worst['branch'])} round {worst['round']} "
                f"({worst['empty']} of {worst['maps']})"
            )
        out.append(text + ". Every metric scores them by its stated rule; none is dropped.")
    return out


def attainable_rhos(points: int) -> list[float]:
    """Every value Spearman's rho can take on `points` untied points (3 points: -1, -0.5, 0.5, 1)."""
    from itertools import permutations

    base = list(range(points))
    denominator = points * (points**2 - 1)
    values = {
        round(1 - 6 * sum((a - b) ** 2 for a, b in zip(base, p, strict=True)) / denominator, 6)
        for p in permutations(base)
    }
    return sorted(values)


def _correlation_members(c: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    members = [r for r in rows if r["column"] == c["column"] or r.get("same_as") == c["column"]]
    if len(members) == 1:
        return f"{method_name(c['method'])} consistency ({metric_name(c['metric'])})"
    by_method: dict[str, list[str]] = {}
    for r in members:
        by_method.setdefault(method_name(r["method"]), []).append(metric_name(r["metric"]))
    names = " and ".join(f"{method} ({', '.join(metrics)})" for method, metrics in by_method.items())
    return f"consistency by {names} (the same per-seed rho for all {len(members)} metrics: counted once)"


def _descriptive_correlation(c: dict[str, Any], what: str) -> str:
    rhos = ", ".join(f"{v:.2g}" for v in c["per_seed_rho"].values() if _finite(v))
    possible = ""
    if c["n_rounds"] <= 6:
        values = attainable_rhos(c["n_rounds"])
        possible = f": on {c['n_rounds']} points rho takes only {len(values)} values" + (
            f" ({', '.join(f'{v:+g}' for v in values)})" if len(values) <= 6 else ""
        )
    return (
        f"Descriptive, no test: within each seed, across its {c['n_rounds']} pruned rounds, accuracy change and "
        f"{what} have Spearman rho {rhos} (mean {c['mean_rho']:.2f} over {c['n_seeds']} seeds). A correlation "
        f"test needs at least {c.get('min_rounds', 5)} rounds per seed{possible}."
    )


def correlation_sentences(findings: dict[str, Any]) -> list[str]:
    """One sentence per distinct within-seed correlation that involves a headline metric."""
    rows = findings["correlations"]
    heads = {r.get("same_as") or r["column"] for r in rows if r["metric"] == HEADLINE_METRIC}
    out = []
    for c in (r for r in rows if r["column"] in heads and not r.get("same_as")):
        what = _correlation_members(c, rows)
        if not _finite(c["mean_rho"]):
            out.append(
                f"Exploratory: the within-seed correlation of accuracy change and {what} is undefined."
            )
            continue
        if c.get("kind") == "descriptive":
            out.append(_descriptive_correlation(c, what))
            continue
        if _finite(c["p_holm"]):
            verdict = "significant" if c["significant"] else "not significant"
            family = c.get("n_distinct", len(rows))
            test = (
                f"95% interval {interval_text(c['ci_low'], c['ci_high'])}, Holm-adjusted "
                f"{format_p(c['p_holm'])} over {family} distinct metrics: {verdict} at alpha {findings['alpha']:g}"
            )
        elif c["n_seeds"] < 3:
            test = f"no test: {c['n_seeds']} seed(s) with a defined rho, a test needs at least 3"
        else:
            test = "no test: the same rho in every seed, so no spread to test against"
        out.append(
            f"Exploratory: within each seed, across pruned rounds, accuracy change and {what} have mean "
            f"Spearman rho = {c['mean_rho']:.2f} over {c['n_seeds']} seeds ({test}); both fall with "
            "sparsity, so this says they fall together, not why."
        )
    return out


def concept_sentences(findings: dict[str, Any], limit: int = 8) -> list[str]:
    dense = findings["concepts_dense_significant"]
    names = sorted({d["concept"] for d in dense})
    out = [
        f"{len(dense)} concept x layer x class "
        + ("row is" if len(dense) == 1 else "rows are")
        + f" significant in a majority (more than half) of the {findings['n_seeds']} dense nets"
        + (f" (concepts: {', '.join(names)})" if names else "")
        + "; the tables' \"significant rows per net\" is a different count: each net's own number of "
        "significant rows, averaged over seeds."
    ]
    for d in dense[:limit]:
        out.append(
            f"In the dense network, concept {d['concept']} pushes class {d['target_class']} "
            f"{d.get('direction') or 'up or down'} (layer {d['layer']})."
        )
    changes = findings["concept_changes"]
    if not changes:
        out.append("No concept loses, gains or reverses significance in any branch.")
        return out
    verbs = {"lost": "loses", "gained": "gains", "reversed": "reverses"}
    for ch in sorted(changes, key=lambda c: (c["branch"] != TICKET, c["round"]))[:limit]:
        pushed = f", now pushing the class {ch['direction']}" if ch.get("direction") else ""
        out.append(
            f"{branch_noun(ch['branch'])}: concept {ch['concept']} (layer {ch['layer']}, class "
            f"{ch['target_class']}) {verbs.get(ch['change'], ch['change'])} significance at round {ch['round']}"
            f"{pushed} ({format_percent(ch['remaining'])} remaining; score {ch['dense_score']:.2f} dense, "
            f"{ch['score']:.2f} then)."
        )
    if len(changes) > limit:
        out.append(f"{len(changes) - limit} further changes are listed in the table below.")
    return out


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
    if _finite(cal.get("bootstrap_upper_99")):
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


def _gap_sentence(gap: dict[str, Any]) -> str:
    """One control's gap to the ticket, with its direction, interval and Holm-adjusted test."""
    if gap["metric"] == "test_accuracy":
        scale, unit = 100.0, " points"
        size, what = f"{abs(100 * gap['mean_gap']):.2f} points", "accuracy"
    else:
        scale, unit = 1.0, ""
        _, method, metric = split_consistency_column(gap["metric"])
        size, what = (
            f"{abs(gap['mean_gap']):.3f}",
            f"{method_name(method)} consistency ({metric_name(metric)})",
        )
    side = "below" if gap["mean_gap"] < 0 else "above"
    significant = bool(gap.get("significant")) and _finite(gap.get("p_holm"))
    prefix = "" if significant else "Descriptive, not a finding (no significant difference): "
    parts = []
    if _finite(gap.get("ci_low")):
        parts.append(f"gap 95% interval {interval_text(gap['ci_low'], gap['ci_high'], scale, unit)}")
    parts.append(gap["test"])
    if _finite(gap.get("p_holm")):
        parts.append(f"Holm-adjusted {format_p(gap['p_holm'])}")
    parts.append(f"n = {gap['n']}")
    return (
        f"{prefix}at round {gap['round']} ({format_percent(gap['remaining'])} remaining) the "
        f"{branch_noun(gap['control'])}'s {what} is {size} {side} the ticket's ({'; '.join(parts)})."
    )


def control_sentences(findings: dict[str, Any]) -> list[str]:
    head = findings.get("headline_consistency")
    last = findings["rounds"]
    return [
        _gap_sentence(g)
        for g in findings["control_gaps"]
        if g["round"] == last and g["metric"] in ("test_accuracy", head) and _finite(g["mean_gap"])
    ]


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def finding_sentences(findings: dict[str, Any]) -> dict[str, list[str]]:
    """Report sections, each a list of sentences built from findings.json numbers only."""
    sections = {
        "Accuracy": accuracy_sentences(findings),
        "When explanations drift": drift_sentences(findings) + empty_map_sentences(findings),
        "Exploratory: accuracy and consistency together": correlation_sentences(findings),
        "Concepts": concept_sentences(findings),
        "TCAV calibration": calibration_sentences(findings),
        "Controls at equal sparsity": control_sentences(findings),
    }
    return {name: [_capitalise(s) for s in sentences] for name, sentences in sections.items()}


def _drops(values: list[float], scale: float, digits: str) -> str:
    """'a drop of 0.18 or more' or 'drops of 0.12-0.18 or more' (one per undecided round)."""
    low, high = min(values), max(values)
    if f"{scale * low:{digits}}" == f"{scale * high:{digits}}":
        return f"a drop of {scale * high:{digits}}"
    return f"drops of {scale * low:{digits}}-{scale * high:{digits}}"


def _headline_accuracy(findings: dict[str, Any]) -> str:
    m = findings["accuracy_match"]
    last, first = m["last_matching_round"], m["first_failing_round"]
    matched = (
        f"tickets match to {format_percent(m['last_matching_remaining'])} weights (round {last})"
        if last != DENSE_ROUND
        else "matching not shown at any round"
    )
    undecided = [
        r for r in m.get("per_round", []) if r["round"] > last and (first is None or r["round"] < first)
    ]
    drops = [-(r.get("fails_power") or {}).get("detectable", np.nan) for r in undecided]
    if undecided and all(_finite(v) for v in drops):
        matched += (
            f", not determined at {rounds_text([r['round'] for r in undecided])} "
            f"(could detect {_drops(drops, 100, '.2f')} points or more)"
        )
    return matched + (f", fail {from_round(first, findings['rounds'])}" if first is not None else "")


def _headline_drift(d: dict[str, Any], findings: dict[str, Any]) -> str:
    what = f"{method_name(d['method'])} consistency"
    if d["relation"] in ("before", "with", "after"):
        return f"{what} drifts {d['relation']} accuracy fails"
    if d["first_drift_round"] is not None:
        where = from_round(d["first_drift_round"], findings["rounds"])
        return f"{what} drifts {where} (relation to accuracy not determined)"
    if d["relation"] == "not drifted in the rounds run":
        return f"{what}: not drifted in the rounds run"
    undecided = undecided_drift_rounds(d)
    drops = [-(r.get("drift_power") or {}).get("detectable", np.nan) for r in undecided]
    shown = f"not drifted to round {d['last_not_drifted_round']}, " if d["last_not_drifted_round"] else ""
    if not undecided or not all(_finite(v) for v in drops):
        return f"{what}: {shown}drift not determined"
    return (
        f"{what}: {shown}drift not determined at {rounds_text([r['round'] for r in undecided])} "
        f"(could detect {_drops(drops, 1, '.2g')} or more)"
    )


def headline(findings: dict[str, Any]) -> str:
    """One line per dataset for stdout and the study report: every "not determined" with what the study
    could have detected (the MDE at 80% power)."""
    m = findings["accuracy_match"]
    parts = [f"dense {format_accuracy(m['dense_accuracy'])}"]
    if not findings.get("tested", True):
        parts.append(f"{findings['n_seeds']} seed(s): numbers only, no test")
        return f"{findings.get('dataset')}: " + "; ".join(parts)
    parts.append(_headline_accuracy(findings))
    head = findings.get("headline_consistency")
    parts += [_headline_drift(d, findings) for d in findings["drift"] if d["column"] == head]
    return f"{findings.get('dataset')}: " + "; ".join(parts)
