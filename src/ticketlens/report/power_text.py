"""What a "not determined" could have seen, in words: the minimum detectable effect (MDE) at 80% power of
each findings test (`analysis.power`, stored per round in findings.json), and the report's Power section.

Text only, from findings.json numbers: `accuracy_power` / `drift_power` phrase one round's MDE, `power_rows`
tabulate every test the headline rests on, `power_sentences` are the report's section.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ticketlens.study import HEADLINE_METRIC, METHOD_NAMES


def _finite(value: Any) -> bool:
    return value is not None and bool(np.isfinite(value))


def _power(fields: dict[str, Any] | None) -> str:
    return f"{100 * (fields or {}).get('power', 0.8):g}% power"


def from_round(round_: int, last_run: int) -> str:
    """'from round 2 on' only when later rounds were run; 'at round 3, the last round run' otherwise."""
    return f"from round {round_} on" if round_ < last_run else f"at round {round_}, the last round run"


def rounds_text(rounds: list[int]) -> str:
    """'round 3', 'rounds 1-3' or 'rounds 1, 3'."""
    if len(rounds) == 1:
        return f"round {rounds[0]}"
    if rounds == list(range(rounds[0], rounds[-1] + 1)):
        return f"rounds {rounds[0]}-{rounds[-1]}"
    return "rounds " + ", ".join(map(str, rounds))


def accuracy_power(row: dict[str, Any], margin: float) -> str:
    """One undecided accuracy round: the drop its "fails" test detects and the difference its "matches"
    test needs, both at 80% power."""
    fails, matches = row.get("fails_power") or {}, row.get("matches_power") or {}
    if not (_finite(fails.get("mde")) and _finite(matches.get("mde"))):
        return f"round {row['round']}: no power figure (no standard error)"
    return (
        f"round {row['round']}: this study could detect a drop of {100 * -fails['detectable']:.2f} points or "
        f"more, and show a match only for a true difference above {100 * matches['detectable']:+.2f} points "
        f"({_power(fails)})"
    )


def drift_power(row: dict[str, Any], margin: float) -> str:
    """One undecided drift round: the drop below the ceiling its test detects at 80% power, the power at
    the round's own estimate and the seeds that estimate would need."""
    fields = row.get("drift_power") or {}
    if not _finite(fields.get("mde")):
        return f"round {row['round']}: no power figure (no standard error)"
    text = (
        f"round {row['round']}: this study could detect a drop of {-fields['detectable']:.2g} or more below "
        f"the ceiling ({_power(fields)})"
    )
    if _finite(fields.get("power_at_estimate")):
        text += f"; at the estimated {row['difference']:.3g} its power is {100 * fields['power_at_estimate']:.0f}%"
        if fields.get("seeds_for_estimate"):
            text += f" ({fields['seeds_for_estimate']} seeds would give 80%)"
    return text


def undecided_drift_rounds(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in d["per_round"] if r["verdict"] == "not determined"]


def power_rows(findings: dict[str, Any]) -> list[dict[str, Any]]:
    """Per round, each test of the headline: accuracy fails / matches and drift of each method's headline
    metric, with its standard error, MDE at 80% power, power at the estimate and seeds for 80% there."""
    rows = []
    m = findings["accuracy_match"]
    for r in m["per_round"]:
        for test, key in (("accuracy fails", "fails_power"), ("accuracy matches", "matches_power")):
            rows.append(_power_row(test, r, r.get(key) or {}, 100.0))
    for d in findings["drift"]:
        if d["metric"] == HEADLINE_METRIC:
            name = f"{METHOD_NAMES.get(d['method'], d['method'])} drift"
            rows += [_power_row(name, r, r.get("drift_power") or {}, 1.0) for r in d["per_round"]]
    return rows


def _power_row(test: str, r: dict[str, Any], fields: dict[str, Any], scale: float) -> dict[str, Any]:
    return {
        "test": test + (" (points)" if scale == 100.0 else ""),
        "round": r["round"],
        "estimate": scale * r["difference"] if _finite(r.get("difference")) else None,
        "se": scale * r["se"] if _finite(r.get("se")) else None,
        "df": r.get("df"),
        "verdict": r["verdict"],
        "mde_80": scale * fields["mde"] if _finite(fields.get("mde")) else None,
        "power_at_estimate": fields.get("power_at_estimate"),
        "seeds_for_80_at_estimate": fields.get("seeds_for_estimate"),
    }


def power_sentences(findings: dict[str, Any]) -> list[str]:
    """The report's Power section: what the study could detect, where it did not decide."""
    if not findings.get("tested", True):
        return [
            f"{findings['n_seeds']} seed(s): no test, so no power to state (a test needs at least 3 seeds)."
        ]
    out = [
        "Every test below is one-sided at alpha "
        f"{findings['alpha']:g}; its minimum detectable effect (MDE) is the smallest true effect it finds with "
        "80% power, from this study's own standard error over seeds (noncentral t, the test's degrees of "
        'freedom). A "not determined" with a large MDE says the study was too small, not that nothing changed.'
    ]
    m = findings["accuracy_match"]
    undecided = [r for r in m["per_round"] if r["verdict"] == "not determined"]
    if undecided:
        out.append(
            "Accuracy not determined at " + "; ".join(accuracy_power(r, m["margin"]) for r in undecided) + "."
        )
    for d in findings["drift"]:
        if d["metric"] != HEADLINE_METRIC or not undecided_drift_rounds(d):
            continue
        method = METHOD_NAMES.get(d["method"], d["method"])
        out.append(
            f"{method} drift not determined at "
            + "; ".join(drift_power(r, findings["consistency_margin"]) for r in undecided_drift_rounds(d))
            + "."
        )
    out.append("How many seeds, test images and random sets a given effect needs: docs/power.md.")
    return out
