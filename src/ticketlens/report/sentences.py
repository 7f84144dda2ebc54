"""The report's sentences, built from findings.json numbers only: the report makes no claim the analysis
did not compute, states every difference with its direction and interval, and says "not determined" when
the test does not decide."""

from __future__ import annotations

from typing import Any

from ticketlens.analysis.tables import split_consistency_column
from ticketlens.report.calibration_text import calibration_sentences
from ticketlens.report.correlation_text import correlation_sentences
from ticketlens.report.power_text import (
    accuracy_power,
    drift_power,
    from_round,
    power_sentences,
    rounds_text,
    undecided_drift_rounds,
)
from ticketlens.report.why import concept_loss_sentences, forgetting_sentences
from ticketlens.report.wording import (
    branch_noun,
    finite,
    format_accuracy,
    format_p,
    format_percent,
    format_points,
    interval_text,
    method_name,
    metric_name,
)
from ticketlens.study import (
    DENSE_ROUND,
    HEADLINE_METRIC,
)

# The sections of the study report that repeat a dataset's sentences (the others stay in its own report).
STUDY_SECTIONS = ("Accuracy", "When explanations drift", "Controls at equal sparsity", "TCAV calibration")


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
    if finite(m.get("dense_ci_low")) and findings.get("tested", n >= 3):
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
    ceiling = f"{d['ceiling']:.3f}" if finite(d["ceiling"]) else "n/a (fewer than 2 dense seeds)"
    if finite(d.get("ceiling_ci_low")):
        ceiling += f" (95% interval {interval_text(d['ceiling_ci_low'], d['ceiling_ci_high'])})"
    floor = f"{d['floor']:.3f}" if finite(d["floor"]) else "n/a"
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


EMPTY_RULE = (
    "Rule for maps with no positive cell (one for every pair, none dropped): such a map has no ranking and no "
    "top set, so a pair with exactly one scores rank correlation 0 (what unrelated maps score on average) and "
    "top-k IoU 0, a pair with two scores 1; consistency is shown on all pairs and, separately, on the pairs "
    "without an empty map, and the share of pairs with one is tested against the dense seed pairs' share."
)


def _undecided(test: dict[str, Any], what: str) -> str:
    mde = (test.get("power") or {}).get("mde")
    return f"not determined; could detect {what} of {mde:.2g} or more" if finite(mde) else "not determined"


def _empty_round_sentence(method: str, row: dict[str, Any], level: str) -> str:
    share, kept = row["empty_share"], row["nonempty_consistency"]
    text = (
        f"{method_name(method)} at round {row['round']}: {format_percent(share['value'])} of ticket-dense pairs "
        f"have an empty map, {format_percent(share['value'] - share['difference'])} of dense seed pairs "
        f"(difference {share['difference']:+.3f}, {level} interval {interval_text(share['ci_low'], share['ci_high'])}, "
        f"one-sided {format_p(share['p'])}: "
        + (
            "more empty maps than between dense seeds"
            if share["significant"]
            else _undecided(share, "an excess")
        )
        + ")"
    )
    if finite(kept["value"]):
        text += (
            f"; on the pairs without an empty map consistency is {kept['value']:.3f}, "
            f"{kept['difference']:+.3f} from the ceiling on such dense pairs ({level} interval "
            f"{interval_text(kept['ci_low'], kept['ci_high'])}, one-sided {format_p(kept['p'])}: "
            + ("below the ceiling" if kept["significant"] else _undecided(kept, "a drop"))
            + ")"
        )
    return text + "."


def empty_pair_sentences(findings: dict[str, Any]) -> list[str]:
    """The empty-map rule, and per method the last round's two tests (`analysis.empty_maps`)."""
    rows = [(e["method"], e["per_round"][-1]) for e in findings.get("empty_pairs", []) if e["per_round"]]
    shown = [(m, r) for m, r in rows if finite(r["empty_share"]["value"]) and r["empty_share"]["value"] > 0]
    if not findings.get("tested", True) or not rows:
        return [EMPTY_RULE] if rows else []
    return [EMPTY_RULE] + [_empty_round_sentence(m, r, _level(findings)) for m, r in shown]


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
        out.append(text + ".")
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
    return out + concept_loss_sentences(findings)


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
    significant = bool(gap.get("significant")) and finite(gap.get("p_holm"))
    prefix = "" if significant else "Descriptive, not a finding (no significant difference): "
    parts = []
    if finite(gap.get("ci_low")):
        parts.append(f"gap 95% interval {interval_text(gap['ci_low'], gap['ci_high'], scale, unit)}")
    parts.append(gap["test"])
    if finite(gap.get("p_holm")):
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
        if g["round"] == last and g["metric"] in ("test_accuracy", head) and finite(g["mean_gap"])
    ]


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def finding_sentences(findings: dict[str, Any]) -> dict[str, list[str]]:
    """Report sections, each a list of sentences built from findings.json numbers only."""
    sections = {
        "Accuracy": accuracy_sentences(findings),
        "When explanations drift": drift_sentences(findings)
        + empty_map_sentences(findings)
        + empty_pair_sentences(findings),
        "Exploratory: accuracy and consistency together": correlation_sentences(findings),
        "Concepts": concept_sentences(findings),
        "Which images tickets forget, and whether their explanations moved first": forgetting_sentences(
            findings
        ),
        "TCAV calibration": calibration_sentences(findings),
        "Controls at equal sparsity": control_sentences(findings),
        "Power: what the study could have detected": power_sentences(findings),
    }
    return {name: [_capitalise(s) for s in sentences] for name, sentences in sections.items()}
