"""Why a ticket fails, in generated sentences and tables from findings.json: which images tickets forget
(per round and class, pruning-identified exemplars), the two drift-first tests with their numbers, and the
concepts tickets lose, ranked by the round they are lost from. Text only: no file access, no matplotlib."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ticketlens.analysis.inference import NOT_DETERMINED
from ticketlens.report.wording import finite, format_p, format_percent, interval_text, method_name

CLASS_COLUMNS = ["round", "label", "forgotten_share", "ci_low", "ci_high", "n_seeds", "pies", "pie_share"]
TEST1_COLUMNS = [
    "round",
    "auc",
    "ci_low",
    "ci_high",
    "n_seeds",
    "n_kept",
    "n_forgotten",
    "p",
    "p_holm",
    "verdict",
]
TEST2_COLUMNS = ["round", "next_round", "auc", "ci_low", "ci_high", "unadjusted_auc", "margin_auc", "n_seeds",
                 "n_kept", "n_forgotten", "p", "p_holm", "verdict"]  # fmt: skip
RANKING_COLUMNS = [
    "concept",
    "layer",
    "target_class",
    "lost_from_round",
    "remaining",
    "difference",
    "dense_effect",
]


def _share_interval(low: float | None, high: float | None) -> str:
    return f"{100 * low:.3g}% to {100 * high:.3g}%" if finite(low) and finite(high) else "no interval"


def _auc_text(row: dict[str, Any]) -> str:
    seeds = f"{row['n_seeds']} seed{'' if row['n_seeds'] == 1 else 's'}"
    if not (finite(row.get("ci_low")) and finite(row.get("ci_high"))):
        return f"AUC {row['auc']:.3f} (mean over {seeds} with a forgotten image, no interval)"
    return f"AUC {row['auc']:.3f} (95% interval {interval_text(row['ci_low'], row['ci_high'])} over {seeds})"


def _test_text(row: dict[str, Any]) -> str:
    return f"permutation {format_p(row['p'])}, Holm over rounds {format_p(row.get('p_holm'))}"


def rate_sentences(forgetting: dict[str, Any]) -> list[str]:
    """How many images tickets forget per round, and how many are pruning-identified exemplars."""
    out = []
    for row in forgetting["per_round"]:
        where = f"round {row['round']}"
        if finite(row.get("remaining")):
            where += f" ({format_percent(row['remaining'])} of weights remaining)"
        pies = f"{row['pies']} test image is a" if row["pies"] == 1 else f"{row['pies']} test images are"
        out.append(
            f"At {where} a ticket forgets {format_percent(row['forgotten_share'])} of the test images its dense "
            f"net classifies correctly (95% interval {_share_interval(row['ci_low'], row['ci_high'])} "
            f"over {row['n_seeds']} seeds); {pies} pruning-identified exemplar{'' if row['pies'] == 1 else 's'} "
            f"({format_percent(row['pie_share'])} of the test images: the seeds' modal prediction differs from the "
            "dense nets')."
        )
    return out


def frequency_sentences(forgetting: dict[str, Any]) -> list[str]:
    """The per-image forgetting frequency over seeds at the last round: how concentrated forgetting is."""
    rows = forgetting.get("frequency") or []
    if not rows:
        return []
    last = rows[-1]
    counts = {int(k): v for k, v in last["by_seeds"].items()}
    parts = [f"{counts[k]} by {k} seed{'' if k == 1 else 's'}" for k in sorted(counts) if k > 0]
    if not parts:
        return [f"At round {last['round']} no test image is forgotten by any seed."]
    return [
        f"Per image over seeds at round {last['round']}: of {last['images']} test images that some dense net "
        f"classifies correctly, {', '.join(parts)} (descriptive: which images are forgotten repeatedly)."
    ]


def first_test_sentences(forgetting: dict[str, Any]) -> list[str]:
    """Test 1: do forgotten images agree less with the dense net than kept ones, round by round?"""
    method = method_name(forgetting.get("method") or "")
    out = []
    for row in forgetting["forgotten_vs_kept"]:
        if not finite(row["auc"]):
            out.append(f"Round {row['round']}: no explained image is forgotten in any seed, so no test.")
            continue
        base = (
            f"Round {row['round']}: kept images agree with the dense net's {method} more than forgotten ones "
            f"with {_auc_text(row)}; {row['n_forgotten']} forgotten and {row['n_kept']} kept explained images"
        )
        if not finite(row["p"]):
            out.append(base + " (numbers only: a test needs at least 3 seeds with a forgotten image).")
        elif row["verdict"] == NOT_DETERMINED:
            out.append(base + f"; not determined ({_test_text(row)}).")
        else:
            out.append(base + f"; forgotten images agree less ({_test_text(row)}).")
    return out


def second_test_sentences(forgetting: dict[str, Any]) -> list[str]:
    """Test 2: does low agreement at round r predict forgetting at r + 1, beyond the dense margin?"""
    out = []
    for row in forgetting["predicts_next"]:
        lead = f"Among images still correct at round {row['round']}"
        if not finite(row["auc"]):
            out.append(f"{lead}, none is forgotten at round {row['next_round']} in any seed: no test.")
            continue
        base = (
            f"{lead}, agreement at round {row['round']} separates the images kept at round {row['next_round']} "
            f"from those forgotten there with {_auc_text(row)} after adjusting for the dense net's margin "
            f"(unadjusted {row['unadjusted_auc']:.3f}; the dense margin alone {row['margin_auc']:.3f})"
        )
        if not finite(row["p"]):
            out.append(base + " (numbers only: a test needs at least 3 seeds with a forgotten image).")
        elif row["verdict"] == NOT_DETERMINED:
            out.append(base + f"; not determined ({_test_text(row)}).")
        else:
            out.append(base + f"; low agreement predicts forgetting beyond the margin ({_test_text(row)}).")
    if not forgetting["predicts_next"]:
        out.append("With one pruned round there is no next round to predict.")
    return out


def forgetting_sentences(findings: dict[str, Any]) -> list[str]:
    """The section "Which images tickets forget, and whether their explanations moved first"."""
    forgetting = findings.get("forgetting") or {}
    if not forgetting:
        return ["No per-image outcomes were given: nothing is said about forgotten images."]
    out = [
        f"Per image: every one of the {forgetting['test_images']} test images of every ticket; explanation "
        f"agreement with the dense net (rank correlation of {method_name(forgetting['method'] or '')} maps) "
        f"for {forgetting['explained_images']} of them, stratified by class. Tests: {forgetting['test']}."
    ]
    return (
        out
        + rate_sentences(forgetting)
        + first_test_sentences(forgetting)
        + second_test_sentences(forgetting)
    )


def concept_loss_sentences(findings: dict[str, Any], limit: int = 10) -> list[str]:
    """The concepts tickets lose, earliest loss first, and how many are kept or not determined."""
    loss = findings.get("concept_loss") or {}
    rows = loss.get("rows") or []
    if not rows:
        return ["No TCAV tables: nothing is said about concepts."]
    counts = {status: sum(r["status"] == status for r in rows) for status in ("lost", "kept", NOT_DETERMINED)}
    out = [
        f"Of {len(rows)} concept x layer x class rows, tickets lose {counts['lost']}, keep {counts['kept']} "
        f"(within +-{loss['margin']:g} of the dense effect at every round) and {counts[NOT_DETERMINED]} are not "
        f"determined ({loss['test']}; {loss['n_seeds']} seeds)."
    ]
    for rank, row in enumerate(loss["ranking"][:limit], start=1):
        out.append(
            f"Lost {rank}: concept {row['concept']} for class {row['target_class']} (layer {row['layer']}) from "
            f"round {row['lost_from_round']} ({format_percent(row['remaining'])} of weights remaining): its "
            f"effect moves {abs(row['difference']):.3f} towards zero from the dense net's {row['dense_effect']:.3f}."
        )
    if len(loss["ranking"]) > limit:
        out.append(f"{len(loss['ranking']) - limit} further lost rows are in the concept-loss table below.")
    return out


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame[[c for c in columns if c in frame]] if not frame.empty else frame


def why_tables(findings: dict[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """(heading, table) of the report's forgetting and concept-loss tables."""
    forgetting = findings.get("forgetting") or {}
    loss = findings.get("concept_loss") or {}
    tables = []
    if forgetting:
        tables += [
            ("Forgetting per class: share of the dense-correct test images forgotten (mean over seeds, 95% "
             "interval) and pruning-identified exemplars", _frame(forgetting["per_class"], CLASS_COLUMNS)),
            ("Drift first, test 1: AUC of agreement, kept vs forgotten images at the same round",
             _frame(forgetting["forgotten_vs_kept"], TEST1_COLUMNS)),
            ("Drift first, test 2: agreement at round r predicts forgetting at r + 1 (adjusted for the dense margin)",
             _frame(forgetting["predicts_next"], TEST2_COLUMNS)),
        ]  # fmt: skip
    if loss:
        tables.append(
            ("Concept loss: rows lost, earliest first (oriented ticket minus dense TCAV effect at that round)",
             _frame(loss.get("ranking") or [], RANKING_COLUMNS))
        )  # fmt: skip
    return tables


def readme_claims(findings: dict[str, Any]) -> list[str]:
    """One line each for the README block: the two drift-first tests at the last testable round and the
    concepts lost first."""
    forgetting = findings.get("forgetting") or {}
    out = []
    for key, what in (("forgotten_vs_kept", "forgotten images agree less"), ("predicts_next", "low agreement predicts next-round forgetting")):  # fmt: skip
        rows = [r for r in forgetting.get(key, []) if finite(r.get("auc"))]
        if not rows:
            out.append(f"{what}: no forgotten explained images to test")
            continue
        row = rows[-1]
        verdict = "shown" if row["verdict"] != NOT_DETERMINED else "not determined"
        out.append(
            f"{what} (round {row['round']}): {verdict}, AUC {row['auc']:.2f} "
            f"[{interval_text(row['ci_low'], row['ci_high'])}], {format_p(row.get('p_holm'))}"
        )
    ranking = (findings.get("concept_loss") or {}).get("ranking") or []
    rows = (findings.get("concept_loss") or {}).get("rows") or []
    if rows:
        first = ", ".join(
            f"{r['concept']}/class {r['target_class']} (round {r['lost_from_round']})" for r in ranking[:3]
        )
        out.append(
            f"concepts lost: {len(ranking)} of {len(rows)} rows" + (f", first {first}" if first else "")
        )
    return out
