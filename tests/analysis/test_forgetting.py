"""The forgetting analysis on simulated studies with known answers: forgotten / kept images, PIEs, and the
two drift-first tests calibrated (no link: rejects at <= alpha), powered (a planted link is found) and each
seen to fail on its broken variant (images pooled across seeds as independent; no margin adjustment)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ticketlens.analysis import forgetting as fg

ALPHA = 0.05
SIMULATIONS = 150


def simulate(
    seed: int,
    link: float = 0.0,
    seed_effect: float = 1.0,
    confound: float = 0.0,
    seeds: int = 4,
    images: int = 300,
    rounds: int = 2,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(outcomes, agreement) of a study: dense margin m = 2.2 - difficulty + noise; the round-r ticket's margin
    falls by 0.6 r and by a seed's own shift u_s (seeds forget different amounts); agreement falls with the
    round and with u_s (seeds drift different amounts). `link`: how much an image's own agreement residual
    raises its ticket margin (the per-image link under test); `confound`: how much agreement tracks the
    dense margin (what test 2 must adjust for)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1, images)
    label = np.arange(images) % 3
    out, agree = [], []
    for s in range(seeds):
        u = seed_effect * rng.normal(0, 1)
        dense = 2.2 - difficulty + rng.normal(0, 0.5, images)
        own = rng.normal(0, 0.1, images)  # an image's own drift in this seed, the same in every round
        for r in range(rounds + 1):
            if r == 0:
                margin, rho = dense, np.ones(images)
            else:
                rho = (
                    0.8
                    - 0.1 * r
                    - 0.1 * u
                    + confound * 0.1 * (dense - 2.2)
                    + own
                    + rng.normal(0, 0.05, images)
                )
                margin = dense - 0.6 * r - 0.5 * u + link * own / 0.1 + rng.normal(0, 0.5, images)
            correct = margin > 0
            out.append(pd.DataFrame({"seed": s, "round": r, "image": np.arange(images), "label": label,
                                     "correct": correct, "predicted": np.where(correct, label, (label + 1) % 3),
                                     "loss": np.log1p(np.exp(-margin)), "margin": margin}))  # fmt: skip
            agree.append(pd.DataFrame({"seed": s, "round": r, "image": np.arange(images), "label": label,
                                       "method": "gradcam", "spearman": rho}))  # fmt: skip
    return pd.concat(out, ignore_index=True), pd.concat(agree, ignore_index=True)


def findings(outcomes: pd.DataFrame, agreement: pd.DataFrame, bins: int = 5) -> dict:
    """forgetting_findings at alpha 0.05 with 199 permutations and `bins` margin bins."""
    return fg.forgetting_findings(outcomes, agreement, ALPHA, 199, bins)


def not_above_alpha(rejections: int, n: int) -> bool:
    """The rejection count is consistent with a rate <= alpha (one-sided binomial test at 1%)."""
    return stats.binom.sf(rejections - 1, n, ALPHA) > 0.01


def test_forgotten_kept_and_pies_on_a_constructed_study() -> None:
    rows = []
    for s in range(3):
        for r in (0, 1):
            for image, label in enumerate([0, 0, 1, 1]):
                wrong = r == 1 and image == 1  # every seed's ticket forgets image 1 ...
                wrong |= r == 1 and image == 2 and s == 0  # ... and seed 0's also image 2
                predicted = (label + 1) % 2 if wrong else label
                rows.append({"seed": s, "round": r, "image": image, "label": label, "correct": not wrong,
                             "predicted": predicted, "loss": 0.1, "margin": -1.0 if wrong else 1.0})  # fmt: skip
    outcomes = pd.DataFrame(rows)
    table = fg.forgetting_table(outcomes)
    assert table.groupby("image")["forgotten"].mean().tolist() == [0, 1, pytest.approx(1 / 3), 0]
    pies = fg.pie_table(outcomes)
    assert pies.loc[pies["pie"], "image"].tolist() == [1]  # image 2: the seeds' modal prediction is unchanged
    per_class = fg.forgetting_rates(table, pies, ["round", "label"])
    assert [row["forgotten_share"] for row in per_class] == [pytest.approx(0.5), pytest.approx(1 / 6)]
    assert [row["pies"] for row in per_class] == [1, 0]
    # per-image frequency over seeds: image 1 forgotten by all 3 seeds, image 2 by 1, images 0 and 3 by none
    assert fg.frequency_counts(table) == [{"round": 1, "images": 4, "by_seeds": {"0": 2, "1": 1, "3": 1}}]


def test_stratified_auc_counts_pairs_within_strata_only() -> None:
    sample = fg.SeedSample(0, np.array([1.0, 0.0, 3.0, 2.0]), np.array([True, False, False, True]),
                           np.array([0, 0, 1, 1]))  # fmt: skip
    assert fg.seed_auc(sample) == 0.5  # stratum 0: kept above; stratum 1: kept below
    pooled = fg.SeedSample(0, sample.scores, sample.kept, np.zeros(4, int))
    assert fg.seed_auc(pooled) == 0.5
    assert np.isnan(fg.seed_auc(fg.SeedSample(0, np.ones(3), np.ones(3, bool), np.zeros(3, int))))


def rejections(test: str, simulations: int = SIMULATIONS, **study: float) -> tuple[int, int]:
    """(rejections at alpha of `test` at its first round, studies where it was testable)."""
    hits = tested = 0
    for i in range(simulations):
        row = findings(*simulate(i, **study))[test][0]
        if np.isfinite(row["p"]):
            tested += 1
            hits += row["p"] < ALPHA
    return hits, tested


def test_forgotten_vs_kept_is_calibrated_with_seeds_that_differ() -> None:
    hits, tested = rejections("forgotten_vs_kept")
    assert tested >= 0.9 * SIMULATIONS and not_above_alpha(hits, tested), (hits, tested)


def test_forgotten_vs_kept_finds_a_planted_link() -> None:
    hits, tested = rejections("forgotten_vs_kept", simulations=40, link=0.3)
    assert hits >= 0.8 * tested, (hits, tested)
    row = findings(*simulate(0, link=0.3))["forgotten_vs_kept"][0]
    assert row["ci_low"] > 0.5 and row["verdict"] == fg.AGREES_LESS


def pooled_p(samples: list[fg.SeedSample], rng: np.random.Generator) -> float:
    """The broken variant: every image of every seed in one pool, shuffled as if independent."""
    pool = fg.SeedSample(
        -1, *(np.concatenate([getattr(s, f) for s in samples]) for f in ("scores", "kept", "strata"))
    )
    null = fg._null_aucs(pool, 199, rng)
    return float((1 + np.sum(null >= fg.seed_auc(pool))) / 200)


def test_pooling_images_across_seeds_is_not_calibrated() -> None:
    """Seeds that drift more also forget more: pooled, that between-seed spread reads as a per-image link."""
    hits = 0
    for i in range(60):
        outcomes, agreement = simulate(i)
        table, (scores, _) = fg.forgetting_table(outcomes), fg.agreement_scores(agreement)
        hits += pooled_p(fg.forgotten_vs_kept_samples(table, scores, 1), np.random.default_rng(i)) < ALPHA
    assert hits > 0.25 * 60, hits  # far above alpha: why the test permutes within seed


def test_predicts_next_is_calibrated_when_agreement_only_tracks_the_dense_margin() -> None:
    hits, tested = rejections("predicts_next", confound=1.0)
    assert tested >= 0.9 * SIMULATIONS and not_above_alpha(hits, tested), (hits, tested)


@pytest.mark.parametrize("adjust", [False, "bins only"])
def test_predicts_next_without_the_full_margin_adjustment_is_not_calibrated(adjust: object) -> None:
    hits = tested = 0
    for i in range(60):
        outcomes, agreement = simulate(i, confound=1.0)
        table, (scores, _) = fg.forgetting_table(outcomes), fg.agreement_scores(agreement)
        rows = fg.predicts_next_rows(table, scores, 1)
        if adjust == "bins only":
            rows = rows.assign(dense_margin=rows["dense_margin"])
            samples = [fg.SeedSample(s.seed, rows.loc[rows["seed"] == s.seed, "score"].to_numpy(float), s.kept, s.strata)
                       for s in fg.predicts_next_samples(rows, 5)]  # fmt: skip
        else:
            samples = fg.predicts_next_samples(rows, 5, adjust=False)
        row = fg.auc_test(samples, 199, np.random.default_rng(i))
        tested += np.isfinite(row["p"])
        hits += row["p"] < ALPHA
    assert hits > 0.25 * tested, (hits, tested)


def test_predicts_next_finds_a_planted_link_beyond_the_margin() -> None:
    hits, tested = rejections("predicts_next", simulations=40, link=0.3, confound=1.0)
    assert hits >= 0.8 * tested, (hits, tested)
    row = findings(*simulate(1, link=0.3, confound=1.0))["predicts_next"][0]
    assert row["margin_auc"] > 0.5 and row["verdict"] == fg.PREDICTS


def test_fewer_than_three_seeds_give_numbers_without_a_test() -> None:
    result = findings(*simulate(0, link=0.3, seeds=2))
    row = result["forgotten_vs_kept"][0]
    assert not result["tested"] and np.isnan(row["p"]) and row["verdict"] == "not determined"
    assert np.isfinite(row["auc"])
