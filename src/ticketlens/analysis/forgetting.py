"""Which test images a ticket forgets, and whether their explanations moved first.

An image is *forgotten* by a ticket at round r when the dense net of its seed classifies it correctly and
the ticket does not; *kept* when both do. Per image, the forgetting frequency is the share of seeds that
forget it. A *pruning-identified exemplar* (PIE; Hooker et al. 2019, arXiv 1911.05248) at round r is an
image whose modal prediction over the seeds' round-r tickets differs from the modal prediction over the
seeds' dense nets.

Two drift-first tests, on the explained subset (`explanations.images`, agreement of each image's map with
its dense net's map):

1. at round r, do kept images agree more with the dense net than forgotten ones? AUC of agreement for
   "kept vs forgotten" per seed.
2. among images still correct at round r, does low agreement at r predict being forgotten at r + 1, beyond
   what the dense net's own margin on the image predicts? Adjusted twice, within each seed: agreement's
   least-squares line in the dense margin is removed (the residual is what agreement says beyond the
   margin), and the eligible images are cut into `margin_bins` quantile bins of the dense margin; the AUC
   counts only pairs of images within one bin (a stratified Mann-Whitney statistic) and the permutation
   shuffles labels within bins. Bins alone leave the margin's spread inside a bin as a confounder (seen
   miscalibrated in the tests: 40% rejections at alpha 0.05 with 5 bins); the line alone trusts linearity.

Images of one seed are repeated measures of one ticket, and seeds differ in how much they forget and how
far they drift: a pooled test would read that between-seed spread as a per-image link. So the statistic is
the mean over seeds of the per-seed AUC, its interval a t-interval over seeds, and its p-value a
permutation test that shuffles labels only within seed (and bin) at that round, exact under the null of no
link within a seed (tests/analysis/test_forgetting.py: calibrated, powered, and the pooled variant seen to
fail). Holm over rounds within each test. Pure functions on tables; no file access.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ticketlens.analysis import inference
from ticketlens.study import DENSE_ROUND, HEADLINE_METRIC, METHOD_NAMES

AGREES_LESS = "forgotten images agree less"
PREDICTS = "low agreement predicts forgetting"
PERMUTATION_SEED = 19  # the permutation draws: fixed, so the same tables give the same p-values
MOST_FORGOTTEN = 12


@dataclass(frozen=True)
class SeedSample:
    """One seed's images in one test: agreement (score), label (True: kept), stratum per image."""

    seed: int
    scores: np.ndarray
    kept: np.ndarray
    strata: np.ndarray


# ------------------------------------------------------------------------------------ the statistic


def _stratum_parts(sample: SeedSample) -> list[tuple[np.ndarray, int, int]]:
    """Per stratum with both labels: (ranks of its scores, number kept, number forgotten)."""
    parts = []
    for stratum in np.unique(sample.strata):
        inside = sample.strata == stratum
        kept = int(sample.kept[inside].sum())
        forgotten = int(inside.sum()) - kept
        if kept and forgotten:
            order = np.argsort(~sample.kept[inside], kind="stable")  # kept first: their ranks are [:kept]
            parts.append((rankdata(sample.scores[inside])[order], kept, forgotten))
    return parts


def seed_auc(sample: SeedSample) -> float:
    """P(a kept image agrees more than a forgotten one of the same stratum), ties half: the stratified
    Mann-Whitney AUC; NaN without a kept-forgotten pair."""
    parts = _stratum_parts(sample)
    pairs = sum(k * f for _, k, f in parts)
    if not pairs:
        return math.nan
    u = sum(float(r[:k].sum()) - k * (k + 1) / 2 for r, k, _ in parts)
    return u / pairs


def _null_aucs(sample: SeedSample, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """The seed's AUC under `permutations` shuffles of its labels within strata."""
    parts = _stratum_parts(sample)
    pairs = sum(k * f for _, k, f in parts)
    if not pairs:
        return np.full(permutations, math.nan)
    u = np.zeros(permutations)
    for ranks, kept, _ in parts:
        draws = np.argsort(rng.random((permutations, len(ranks))), axis=1)[:, :kept]
        u += ranks[draws].sum(axis=1) - kept * (kept + 1) / 2
    return u / pairs


def auc_test(
    samples: Sequence[SeedSample], permutations: int, rng: np.random.Generator, level: float = 0.95
) -> dict[str, Any]:
    """Mean over seeds of the per-seed AUC, its t-interval over seeds (in [0, 1]) and the one-sided
    permutation p of H0 "no link within any seed" against "kept images agree more" (AUC > 0.5)."""
    aucs = {s.seed: seed_auc(s) for s in samples}
    used = [s for s in samples if np.isfinite(aucs[s.seed])]
    est = inference.seed_mean([aucs[s.seed] for s in used], level, (0.0, 1.0))
    out = {
        "auc": est.estimate,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "n_seeds": len(used),
        "per_seed": {int(s.seed): aucs[s.seed] for s in samples},
        "n_kept": int(sum(int(s.kept.sum()) for s in used)),
        "n_forgotten": int(sum(int((~s.kept).sum()) for s in used)),
        "p": math.nan,
    }
    if len(used) >= inference.MIN_SEEDS_FOR_TESTS:
        null = np.mean([_null_aucs(s, permutations, rng) for s in used], axis=0)
        out["p"] = float((1 + np.sum(null >= est.estimate - 1e-12)) / (permutations + 1))
    return out


# ----------------------------------------------------------------------------------- the tables


def agreement_scores(agreement: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """(seed, round, image, score) of the headline method (Grad-CAM when there is one) and its name."""
    if agreement is None or agreement.empty:
        return pd.DataFrame(columns=["seed", "round", "image", "score"]), None
    method = next((m for m in METHOD_NAMES if m in set(agreement["method"])), None)
    part = agreement[agreement["method"] == method]
    scores = part[["seed", "round", "image", HEADLINE_METRIC]].rename(columns={HEADLINE_METRIC: "score"})
    return scores.reset_index(drop=True), method


def forgetting_table(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per seed x pruned round x test image: dense_correct, correct, forgotten, and the dense margin."""
    dense = outcomes[outcomes["round"] == DENSE_ROUND][["seed", "image", "correct", "margin"]]
    dense = dense.rename(columns={"correct": "dense_correct", "margin": "dense_margin"})
    pruned = outcomes[outcomes["round"] > DENSE_ROUND]
    table = pruned.merge(dense, on=["seed", "image"], how="inner", validate="many_to_one")
    table["dense_correct"] = table["dense_correct"].astype(bool)
    table["correct"] = table["correct"].astype(bool)
    table["forgotten"] = table["dense_correct"] & ~table["correct"]
    return table


def _modal(predictions: pd.DataFrame) -> pd.Series:
    """Per image, the most frequent prediction over seeds (ties: the smallest class)."""
    counts = predictions.groupby(["image", "predicted"]).size().reset_index(name="n")
    counts = counts.sort_values(["image", "n", "predicted"], ascending=[True, False, True])
    return counts.drop_duplicates("image").set_index("image")["predicted"]


def pie_table(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per pruned round x test image: whether it is a pruning-identified exemplar (Hooker et al.)."""
    dense_mode = _modal(outcomes[outcomes["round"] == DENSE_ROUND])
    labels = outcomes.drop_duplicates("image").set_index("image")["label"]
    rows = []
    for r, group in outcomes[outcomes["round"] > DENSE_ROUND].groupby("round", sort=True):
        mode = _modal(group)
        rows.append(
            pd.DataFrame(
                {
                    "round": int(r),
                    "image": mode.index,
                    "label": labels.loc[mode.index].to_numpy(),
                    "pie": mode.to_numpy() != dense_mode.loc[mode.index].to_numpy(),
                }
            )
        )
    return (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["round", "image", "label", "pie"])
    )


def _share(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def forgetting_rates(table: pd.DataFrame, pies: pd.DataFrame, by: list[str]) -> list[dict[str, Any]]:
    """Per `by` (round, or round and class): the share of the dense-correct test images a ticket forgets,
    mean over seeds with a 95% t-interval over seeds, and the PIE count and share."""
    eligible = table[table["dense_correct"]]
    per_seed = eligible.groupby([*by, "seed"])["forgotten"].mean().reset_index()
    pie_counts = pies.groupby(by)["pie"].agg(["sum", "mean"]) if len(pies) else None
    rows = []
    for key, group in per_seed.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        est = inference.seed_mean(group["forgotten"].tolist(), 0.95, (0.0, 1.0))
        row = {name: int(v) for name, v in zip(by, key, strict=True)}
        pie = pie_counts.loc[key if len(key) > 1 else key[0]] if pie_counts is not None else None
        rows.append(
            row
            | {
                "forgotten_share": est.estimate,
                "ci_low": est.ci_low,
                "ci_high": est.ci_high,
                "n_seeds": est.n,
                "pies": int(pie["sum"]) if pie is not None else 0,
                "pie_share": float(pie["mean"]) if pie is not None else math.nan,
            }
        )
    return rows


def frequency_counts(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Per pruned round, the per-image forgetting frequency over seeds as counts: how many test images are
    forgotten by exactly k of the seeds whose dense net classifies them correctly (images every seed's
    dense net gets wrong have no frequency)."""
    eligible = table[table["dense_correct"]]
    rows = []
    for r, group in eligible.groupby("round", sort=True):
        per_image = group.groupby("image")["forgotten"].sum().astype(int)
        counts = per_image.value_counts().sort_index()
        rows.append({"round": int(r), "images": int(len(per_image)),
                     "by_seeds": {str(int(k)): int(v) for k, v in counts.items()}})  # fmt: skip
    return rows


def most_forgotten(
    table: pd.DataFrame, explained: set[int], limit: int = MOST_FORGOTTEN
) -> list[dict[str, Any]]:
    """The explained images forgotten most often (share of seed x round cells whose dense net is correct),
    each with the seed that forgets it first and that round: what the gallery shows."""
    part = table[table["dense_correct"] & table["image"].isin(explained)]
    if part.empty:
        return []
    stats = part.groupby("image").agg(label=("label", "first"), frequency=("forgotten", "mean"))
    stats = stats[stats["frequency"] > 0].sort_values(["frequency"], ascending=False, kind="stable")
    out = []
    for image, row in stats.head(limit).iterrows():
        hits = part[(part["image"] == image) & part["forgotten"]].sort_values(["round", "seed"])
        first = hits.iloc[0]
        out.append(
            {
                "image": int(image),
                "label": int(row["label"]),
                "frequency": float(row["frequency"]),
                "seed": int(first["seed"]),
                "first_round": int(first["round"]),
            }
        )
    return out


# ------------------------------------------------------------------------------ the two tests


def margin_strata(margins: np.ndarray, bins: int) -> np.ndarray:
    """Quantile bins of the dense margin (ranks cut into `bins` equal groups; ties share a bin)."""
    if len(margins) == 0 or bins <= 1:
        return np.zeros(len(margins), dtype=np.int64)
    ranks = rankdata(margins, method="min") - 1
    return np.minimum((ranks * bins) // len(margins), bins - 1).astype(np.int64)


def forgotten_vs_kept_samples(table: pd.DataFrame, scores: pd.DataFrame, r: int) -> list[SeedSample]:
    """Test 1 at round r: dense-correct explained images, kept or forgotten at r, scored by agreement at r."""
    rows = table[(table["round"] == r) & table["dense_correct"]].merge(scores, on=["seed", "round", "image"])
    return [
        SeedSample(int(s), g["score"].to_numpy(float), ~g["forgotten"].to_numpy(bool), np.zeros(len(g), int))
        for s, g in rows.groupby("seed", sort=True)
    ]


def predicts_next_rows(table: pd.DataFrame, scores: pd.DataFrame, r: int) -> pd.DataFrame:
    """Test 2 at round r: images correct for the dense net and the round-r ticket, with their agreement at r,
    dense margin and whether the round-(r + 1) ticket forgets them."""
    now = table[(table["round"] == r) & table["correct"] & table["dense_correct"]]
    now = now.drop(columns="forgotten").merge(scores, on=["seed", "round", "image"])
    later = table[table["round"] == r + 1][["seed", "image", "forgotten"]]
    return now.merge(later, on=["seed", "image"])


def residual_on_margin(scores: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """Agreement minus its least-squares line in the dense margin: what agreement says beyond the margin."""
    if len(scores) < 3 or np.ptp(margins) == 0:
        return scores - scores.mean() if len(scores) else scores
    slope, intercept = np.polyfit(margins, scores, 1)
    return scores - (slope * margins + intercept)


def predicts_next_samples(
    rows: pd.DataFrame, bins: int, score: str = "score", adjust: bool = True
) -> list[SeedSample]:
    """Per seed: `score` of each image, kept or forgotten at r + 1. Adjusted for the dense margin (within
    the seed) twice: the score's linear trend in the margin is removed, and pairs are compared only within
    `bins` quantile bins of the margin (which catches what a line misses); `adjust` False: neither."""
    samples = []
    for s, g in rows.groupby("seed", sort=True):
        values, margins = g[score].to_numpy(float), g["dense_margin"].to_numpy(float)
        if adjust:
            values = residual_on_margin(values, margins)
        strata = margin_strata(margins, bins if adjust else 1)
        samples.append(SeedSample(int(s), values, ~g["forgotten"].to_numpy(bool), strata))
    return samples


def _mean_auc(samples: list[SeedSample]) -> float:
    aucs = np.array([seed_auc(s) for s in samples], dtype=float)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else math.nan


def _verdicts(rows: list[dict[str, Any]], alpha: float, claim: str) -> None:
    for row, p_holm in zip(rows, inference.holm([row["p"] for row in rows]), strict=True):
        row["p_holm"] = p_holm
        row["verdict"] = claim if np.isfinite(p_holm) and p_holm < alpha else inference.NOT_DETERMINED


def drift_first_tests(
    table: pd.DataFrame,
    scores: pd.DataFrame,
    rounds: Sequence[int],
    alpha: float,
    permutations: int,
    bins: int,
) -> dict[str, list[dict[str, Any]]]:
    """Both drift-first tests per round, each with its effect (mean AUC over seeds), interval, permutation
    p and Holm over the rounds of that test."""
    first, second = [], []
    for r in rounds:
        rng = np.random.default_rng([PERMUTATION_SEED, 1, int(r)])
        first.append(
            {"round": int(r), **auc_test(forgotten_vs_kept_samples(table, scores, r), permutations, rng)}
        )
        if r + 1 in rounds:
            rows = predicts_next_rows(table, scores, r)
            rng = np.random.default_rng([PERMUTATION_SEED, 2, int(r)])
            row = {"round": int(r), "next_round": int(r) + 1}
            row |= auc_test(predicts_next_samples(rows, bins), permutations, rng)
            # context, no test: the same AUC without the adjustment, and the dense margin's own AUC
            row["unadjusted_auc"] = _mean_auc(predicts_next_samples(rows, bins, adjust=False))
            row["margin_auc"] = _mean_auc(predicts_next_samples(rows, bins, "dense_margin", adjust=False))
            second.append(row)
    _verdicts(first, alpha, AGREES_LESS)
    _verdicts(second, alpha, PREDICTS)
    return {"forgotten_vs_kept": first, "predicts_next": second}


def forgetting_findings(
    outcomes: pd.DataFrame,
    agreement: pd.DataFrame,
    alpha: float,
    permutations: int,
    bins: int,
    remaining: dict[int, float] | None = None,
) -> dict[str, Any]:
    """findings.json `forgetting`: rates per round and class, PIEs, the most-forgotten explained images
    and the two drift-first tests. `outcomes` / `agreement`: the ticket branch's outcomes.csv and
    agreement.csv rows with `seed` and `round` columns."""
    if outcomes is None or outcomes.empty:
        return {}
    table = forgetting_table(outcomes)
    pies = pie_table(outcomes)
    scores, method = agreement_scores(agreement)
    rounds = sorted(int(r) for r in table["round"].unique())
    seeds = sorted(int(s) for s in outcomes["seed"].unique())
    per_round = forgetting_rates(table, pies, ["round"])
    for row in per_round:
        row["remaining"] = (remaining or {}).get(row["round"])
    tests = drift_first_tests(table, scores, rounds, alpha, permutations, bins)
    return {
        "test": (
            "AUC of agreement with the dense net (kept vs forgotten images; test 2 stratified by "
            f"{bins} bins of the dense margin), mean over seeds with a 95% t-interval; one-sided permutation "
            f"p ({permutations} draws, labels shuffled within seed, round and margin bin); Holm over rounds"
        ),
        "method": method,
        "metric": HEADLINE_METRIC,
        "n_seeds": len(seeds),
        "tested": len(seeds) >= inference.MIN_SEEDS_FOR_TESTS,
        "alpha": alpha,
        "test_images": int(outcomes["image"].nunique()),
        "explained_images": int(scores["image"].nunique()),
        "margin_bins": bins,
        "per_round": per_round,
        "per_class": forgetting_rates(table, pies, ["round", "label"]),
        "frequency": frequency_counts(table),
        "most_forgotten": most_forgotten(table, set(scores["image"].astype(int))),
        **tests,
    }
