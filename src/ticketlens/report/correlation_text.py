"""Sentences of the exploratory within-seed correlations: a test only where the rounds allow one, and
metrics that give the same per-seed values counted once."""

from __future__ import annotations

from itertools import permutations
from typing import Any

from ticketlens.report.wording import finite, format_p, interval_text, method_name, metric_name
from ticketlens.study import HEADLINE_METRIC


def attainable_rhos(points: int) -> list[float]:
    """Every value Spearman's rho can take on `points` untied points (3 points: -1, -0.5, 0.5, 1)."""
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
    rhos = ", ".join(f"{v:.2g}" for v in c["per_seed_rho"].values() if finite(v))
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
        if not finite(c["mean_rho"]):
            out.append(
                f"Exploratory: the within-seed correlation of accuracy change and {what} is undefined."
            )
            continue
        if c.get("kind") == "descriptive":
            out.append(_descriptive_correlation(c, what))
            continue
        if finite(c["p_holm"]):
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
