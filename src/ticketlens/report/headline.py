"""The one-line headline per dataset (stdout, summary.txt, the study report): every "not determined" with
what the study could have detected (its MDE at 80% power), "from round r on" only for rounds that were run."""

from __future__ import annotations

from typing import Any

import numpy as np

from ticketlens.report.power_text import from_round, rounds_text, undecided_drift_rounds
from ticketlens.report.wording import finite, format_accuracy, format_percent, method_name
from ticketlens.study import DENSE_ROUND


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
    if undecided and all(finite(v) for v in drops):
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
    if not undecided or not all(finite(v) for v in drops):
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
