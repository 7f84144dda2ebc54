"""The report's sentences, built from findings.json numbers only: the report makes no claim the analysis
did not compute."""

from __future__ import annotations

from typing import Any

import numpy as np

from ticketlens.study import (
    BRANCH_NOUNS,
    DENSE_ROUND,
    HEADLINE_METRIC,
    METHOD_NAMES,
    SIMILARITY_METRICS,
    TICKET,
)
from ticketlens.summary import split_consistency_column

# The sections of the study report that repeat a dataset's sentences (the others stay in its own report).
STUDY_SECTIONS = ("Accuracy", "Controls at equal sparsity")


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def metric_name(metric: str) -> str:
    return SIMILARITY_METRICS.get(metric, metric)


def branch_noun(branch: str) -> str:
    return BRANCH_NOUNS.get(branch, branch)


def format_p(p: float | None) -> str:
    """'p = 0.003' or 'p < 1e-4' (p-values that small are not resolved by a handful of seeds anyway)."""
    if p is None or not np.isfinite(p):
        return "p n/a"
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def format_percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.3g}%"


def format_accuracy(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


# --------------------------------------------------------------------------------------- sections


def accuracy_sentences(findings: dict[str, Any]) -> list[str]:
    m = findings["accuracy_match"]
    n = findings["n_seeds"]
    if m.get("dense_ci_low") is not None:
        interval = (
            f"95% t-interval {format_accuracy(m['dense_ci_low'])} to {format_accuracy(m['dense_ci_high'])} "
            f"over {n} seeds"
        )
    else:
        interval = "one seed, so no interval: matching uses a fixed tolerance of one accuracy point"
    out = [f"The dense network reaches {format_accuracy(m['dense_accuracy'])} test accuracy ({interval})."]
    last, first = m["last_matching_round"], m["first_failing_round"]
    if first is None:
        out.append(
            f"Tickets match the dense accuracy at every pruning round, down to round {last} "
            f"({format_percent(m['last_matching_remaining'])} of weights remaining)."
        )
    elif last == DENSE_ROUND:
        out.append(
            f"Already the first pruned ticket (round {first}, {format_percent(m['first_failing_remaining'])} "
            "of weights remaining) falls below the dense accuracy."
        )
    else:
        out.append(
            f"Tickets match the dense accuracy up to round {last} ({format_percent(m['last_matching_remaining'])}"
            f" of weights remaining); round {first} ({format_percent(m['first_failing_remaining'])}) is the "
            "first that does not."
        )
    out.append(f"Matching criterion: {m['criterion']}.")
    return out


def onset_sentences(findings: dict[str, Any]) -> list[str]:
    out = []
    for o in findings["consistency_onset"]:
        if o["metric"] != HEADLINE_METRIC:
            continue  # the table lists every metric; sentences keep to the headline metric per method
        what = f"{method_name(o['method'])} consistency with the dense net ({metric_name(o['metric'])})"
        if o["baseline_mean"] is None:
            continue
        start = f"{what} is {o['baseline_mean']:.2f} at round 1"
        acc = o["accuracy_first_failing_round"]
        acc_text = f"accuracy first fails at round {acc}" if acc is not None else "accuracy never fails"
        if o["first_drop_round"] is None:
            out.append(f"{start} and does not fall further within the studied rounds; {acc_text}.")
        else:
            out.append(
                f"{start} and starts falling at round {o['first_drop_round']} "
                f"({format_percent(o['first_drop_remaining'])} of weights remaining): {o['relation']} accuracy "
                f"({acc_text})."
            )
    return out


def correlation_sentences(findings: dict[str, Any]) -> list[str]:
    out = []
    for c in findings["correlations"]:
        if c["metric"] != HEADLINE_METRIC or c["scope"] != "ticket":
            continue
        what = f"{method_name(c['method'])} consistency ({metric_name(c['metric'])})"
        if c["spearman_rho"] is None:
            out.append(f"The correlation between accuracy change and {what} is undefined (n = {c['n']}).")
            continue
        verdict = "significant" if c["significant"] else "not significant"
        out.append(
            f"Across pruned tickets, accuracy change and {what} have Spearman rho = {c['spearman_rho']:.2f} "
            f"({format_p(c['spearman_p'])}, n = {c['n']}; {verdict} at alpha {findings['alpha']:g}); "
            f"Pearson r = {c['pearson_r']:.2f} ({format_p(c['pearson_p'])})."
        )
    return out


def concept_sentences(findings: dict[str, Any], limit: int = 8) -> list[str]:
    dense = findings["concepts_dense_significant"]
    names = sorted({d["concept"] for d in dense})
    out = [
        f"The dense network has {len(dense)} significant concept-layer-class "
        + ("combination" if len(dense) == 1 else "combinations")
        + (f" (concepts: {', '.join(names)})." if names else ".")
    ]
    changes = findings["concept_changes"]
    if not changes:
        out.append("No concept loses or gains significance in any branch.")
        return out
    for ch in sorted(changes, key=lambda c: (c["branch"] != TICKET, c["round"]))[:limit]:
        verb = "loses" if ch["change"] == "lost" else "gains"
        out.append(
            f"{branch_noun(ch['branch'])}: concept {ch['concept']} (layer {ch['layer']}, class "
            f"{ch['target_class']}) {verb} significance at round {ch['round']} "
            f"({format_percent(ch['remaining'])} remaining; score {ch['dense_score']:.2f} dense, "
            f"{ch['score']:.2f} then)."
        )
    if len(changes) > limit:
        out.append(f"{len(changes) - limit} further changes are listed in the table below.")
    return out


def _gap_sentence(gap: dict[str, Any]) -> str:
    """One control's gap to the ticket, with its interval and test."""
    # Accuracy gaps are stated in percentage points, consistency gaps in the metric's own units.
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
    ci = (
        ""
        if gap["ci_low"] is None
        else f"gap 95% CI {scale * gap['ci_low']:+.3g} to {scale * gap['ci_high']:+.3g}{unit}; "
    )
    p_text = "" if gap["p"] is None else f"{format_p(gap['p'])}, "
    test = f"{ci}{gap['test']}, {p_text}n = {gap['n']}"
    return (
        f"At round {gap['round']} ({format_percent(gap['remaining'])} remaining) the "
        f"{branch_noun(gap['control'])}'s {what} is {size} {side} the ticket's ({test})."
    )


def control_sentences(findings: dict[str, Any]) -> list[str]:
    head = findings.get("headline_consistency")
    last = findings["rounds"]
    return [
        _gap_sentence(g)
        for g in findings["control_gaps"]
        if g["round"] == last and g["metric"] in ("test_accuracy", head) and g["mean_gap"] is not None
    ]


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def finding_sentences(findings: dict[str, Any]) -> dict[str, list[str]]:
    """Report sections, each a list of sentences built from findings.json numbers only."""
    sections = {
        "Accuracy": accuracy_sentences(findings),
        "When explanations drift": onset_sentences(findings) + correlation_sentences(findings),
        "Concepts": concept_sentences(findings),
        "Controls at equal sparsity": control_sentences(findings),
    }
    return {name: [_capitalise(s) for s in sentences] for name, sentences in sections.items()}


def headline(findings: dict[str, Any]) -> str:
    """One line per dataset for stdout and the study report."""
    m = findings["accuracy_match"]
    parts = [f"dense {format_accuracy(m['dense_accuracy'])}"]
    if m["first_failing_round"] is None:
        parts.append(
            f"tickets match at every round (to {format_percent(m['last_matching_remaining'])} weights)"
        )
    else:
        parts.append(
            f"tickets match to {format_percent(m['last_matching_remaining'])} weights "
            f"(round {m['last_matching_round']}), fail from round {m['first_failing_round']}"
        )
    head = findings.get("headline_consistency")
    for o in findings["consistency_onset"]:
        if o["column"] != head:
            continue
        if o["relation"] == "neither falls":
            parts.append(f"neither accuracy nor {method_name(o['method'])} consistency falls after round 1")
        else:
            parts.append(f"{method_name(o['method'])} consistency falls {o['relation']} accuracy")
    return f"{findings.get('dataset')}: " + "; ".join(parts)
