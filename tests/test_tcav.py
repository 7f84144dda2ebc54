"""TCAV: statistics on constructed scores, the cached path against captum's own TCAV loop, cache isolation."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from captum_reference import captum_tcav_rows
from ticketlens.errors import UserError
from ticketlens.explanations import tcav

ALPHA = 0.05


def rows(
    concept: str, scores_by_key: dict[tuple[str, int], list[float]], accuracy: float = 0.9
) -> pd.DataFrame:
    records = [
        (concept, layer, k, f"random_{i}", score, accuracy)
        for (layer, k), scores in scores_by_key.items()
        for i, score in enumerate(scores)
    ]
    return pd.DataFrame(records, columns=tcav.ROW_COLUMNS)


NULL = rows("random", {("l1", 0): [0.5, 0.4, 0.6, 0.55, 0.45], ("l1", 1): [0.5, 0.45, 0.55, 0.6, 0.4]})


def test_summary_marks_a_strong_concept_and_not_a_null_like_one() -> None:
    strong = rows("strong", {("l1", 0): [0.9, 0.95, 1.0, 0.92, 0.98], ("l1", 1): [0.5, 0.4, 0.6, 0.55, 0.45]})
    weak = rows(
        "weak", {("l1", 0): [0.5, 0.42, 0.58, 0.55, 0.45], ("l1", 1): [0.52, 0.47, 0.5, 0.6, 0.4]}, 0.55
    )
    summary = tcav.summarize_tcav(pd.concat([strong, weak]), NULL, ALPHA).set_index(
        ["concept", "target_class"]
    )
    assert summary.loc[("strong", 0), "significant"]
    assert not summary.loc[("strong", 1), "significant"]
    assert not summary.loc[("weak", 0), "significant"]
    assert summary.loc[("strong", 0), "mean"] == pytest.approx(0.95)
    assert summary.loc[("strong", 0), "std"] == pytest.approx(np.std([0.9, 0.95, 1.0, 0.92, 0.98], ddof=1))
    # two-sided t-test as scipy computes it, then Bonferroni over 2 concepts x 1 layer x 2 classes
    from scipy.stats import ttest_ind

    p = ttest_ind([0.9, 0.95, 1.0, 0.92, 0.98], [0.5, 0.4, 0.6, 0.55, 0.45]).pvalue
    assert summary.loc[("strong", 0), "p_value"] == pytest.approx(p)
    assert summary.loc[("strong", 0), "p_bonferroni"] == pytest.approx(min(1.0, 4 * p))
    assert summary.loc[("weak", 0), "near_chance"] and not summary.loc[("strong", 0), "near_chance"]


def test_bonferroni_can_remove_significance() -> None:
    # p about 0.02: significant alone, not after correcting for 4 tests
    concept = {("l1", 0): [0.62, 0.58, 0.66, 0.6, 0.64]}
    alone = tcav.summarize_tcav(rows("c", concept), NULL, ALPHA)
    assert 0.0125 < alone["p_value"].iloc[0] < 0.05 and alone["significant"].iloc[0]
    many = pd.concat([rows(name, concept) for name in "abcd"])
    assert not tcav.summarize_tcav(many, NULL, ALPHA)["significant"].any()


def test_degenerate_scores_do_not_give_nan() -> None:
    constant = rows("c", {("l1", 0): [1.0] * 5})
    null = rows("random", {("l1", 0): [1.0] * 5})
    assert tcav.summarize_tcav(constant, null, ALPHA)["p_value"].iloc[0] == 1.0
    other = rows("random", {("l1", 0): [0.0] * 5})
    assert tcav.summarize_tcav(constant, other, ALPHA)["significant"].iloc[0]


def test_compare_tcav_with_known_answers() -> None:
    dense_rows = pd.concat([
        rows("a", {("l1", 0): [0.9, 0.95, 1.0, 0.92, 0.98]}),
        rows("b", {("l1", 0): [0.1, 0.05, 0.0, 0.08, 0.02]}),
        rows("c", {("l1", 0): [0.5, 0.45, 0.55, 0.5, 0.5]}),
    ])  # fmt: skip
    same = tcav.compare_tcav(*(2 * [tcav.summarize_tcav(dense_rows, NULL, ALPHA)]), dense_rows, dense_rows)
    assert same["spearman"] == pytest.approx(1.0) and same["jaccard"] == 1.0
    assert not same["changes"]["changed"].any()
    ticket_rows = dense_rows.copy()
    ticket_rows.loc[ticket_rows["concept"] == "a", "score"] = [0.5, 0.45, 0.55, 0.5, 0.5]
    ticket_rows.loc[ticket_rows["concept"] == "c", "score"] = [0.9, 0.95, 1.0, 0.92, 0.98]
    result = tcav.compare_tcav(
        tcav.summarize_tcav(ticket_rows, NULL, ALPHA),
        tcav.summarize_tcav(dense_rows, NULL, ALPHA),
        ticket_rows,
        dense_rows,
    )
    changes = result["changes"].set_index("concept")
    assert changes.loc["a", "changed"] and changes.loc["c", "changed"] and not changes.loc["b", "changed"]
    assert changes.loc["a", "delta"] == pytest.approx(0.5 - 0.95)
    assert result["jaccard"] == pytest.approx(1 / 3)  # b stays significant; a lost, c gained
    assert result["spearman"] == pytest.approx(0.5)


# ---------------------------------------------------------------- cached path vs captum


@pytest.fixture(scope="module")
def small_setup() -> dict:
    from ticketlens.models import build_model

    torch.manual_seed(0)
    model = build_model("convnet_mnist", 3, 1, 16, [0.5], [0.25], width=0.5).eval()
    g = torch.Generator().manual_seed(1)
    randoms = [(f"random_{i}", torch.rand(10, 1, 16, 16, generator=g)) for i in range(3)]
    concept = torch.rand(10, 1, 16, 16, generator=g)
    concept[:, :, :4] = 1.0  # a bright band
    inputs = {k: torch.rand(6, 1, 16, 16, generator=g) for k in range(3)}
    return {"model": model, "randoms": randoms, "concept": ("band", concept), "inputs": inputs}


def cached_rows(setup: dict, model: torch.nn.Module | None = None) -> pd.DataFrame:
    model = model or setup["model"]
    layers = list(model.tcav_layers)
    class_inputs = {k: (np.arange(len(x)), x) for k, x in setup["inputs"].items()}
    cache = tcav.build_cache(model, layers, setup["randoms"], class_inputs)
    name, images = setup["concept"]
    return tcav.concept_rows(name, tcav.layer_activations(model, layers, images), cache)


def test_cached_path_reproduces_captum_tcav_exactly(small_setup: dict, tmp_path: Path) -> None:
    ours = cached_rows(small_setup)
    model = small_setup["model"]
    theirs = captum_tcav_rows(
        model,
        list(model.tcav_layers),
        [small_setup["concept"]],
        small_setup["randoms"],
        small_setup["inputs"],
        tmp_path,
    )
    keys = ["concept", "layer", "target_class", "random_set"]
    merged = ours.merge(theirs, on=keys, suffixes=("_ours", "_captum"))
    assert len(merged) == len(ours) == len(theirs) == 2 * 3 * 3
    np.testing.assert_array_equal(merged["score_ours"], merged["score_captum"])
    np.testing.assert_array_equal(merged["cav_accuracy_ours"], merged["cav_accuracy_captum"])
    assert merged["score_ours"].nunique() > 1  # not a trivially constant comparison


def test_cav_fits_are_seeded_and_repeatable(small_setup: dict) -> None:
    pd.testing.assert_frame_equal(cached_rows(small_setup), cached_rows(small_setup))


def test_binary_cav_accuracy_is_real_not_the_class_prior() -> None:
    # captum 0.9.0's DefaultClassifier reports the share of the first class for two-concept sets
    g = torch.Generator().manual_seed(0)
    positive = torch.randn(30, 8, generator=g) + 5.0
    negative = torch.randn(30, 8, generator=g) - 5.0
    cav, accuracy = tcav.train_cav(positive, negative, tcav.make_classifier())
    assert accuracy == 1.0
    assert float((positive @ cav > 0).float().mean()) == 1.0  # the CAV points towards the concept


def test_changed_weights_give_new_cavs_in_a_reused_captum_save_path(
    small_setup: dict, tmp_path: Path
) -> None:
    model = small_setup["model"]
    layers = list(model.tcav_layers)
    args = ([small_setup["concept"]], small_setup["randoms"], small_setup["inputs"], tmp_path)
    before = captum_tcav_rows(model, layers, *args)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        for p in changed.parameters():
            p.mul_(-1.5)
    after = captum_tcav_rows(changed, layers, *args)  # same save path on purpose
    fresh = captum_tcav_rows(changed, layers, *args[:-1], tmp_path / "fresh")
    pd.testing.assert_frame_equal(after, fresh)
    assert not before["score"].equals(after["score"])
    # the trap the weight-derived model id avoids: with a fixed id the same folder serves stale CAVs
    captum_tcav_rows(model, layers, *args[:-1], tmp_path / "trap", model_id="fixed")
    stale = captum_tcav_rows(changed, layers, *args[:-1], tmp_path / "trap", model_id="fixed")
    assert not stale.equals(fresh)


def test_cached_scores_follow_the_weights(small_setup: dict) -> None:
    changed = copy.deepcopy(small_setup["model"])
    with torch.no_grad():
        for p in changed.parameters():
            p.mul_(-1.5)
    assert not cached_rows(small_setup)["score"].equals(cached_rows(small_setup, changed)["score"])


def test_tcav_concept_refuses_a_cache_of_another_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"weights")
    torch.save(
        {"version": tcav.CACHE_VERSION, "checkpoint_sha256": "0" * 64, "layers": []}, tmp_path / "cache.pt"
    )
    with pytest.raises(UserError, match="another checkpoint"):
        tcav.tcav_concept(checkpoint, tmp_path / "c.pt", tmp_path / "cache.pt", tmp_path / "out.csv", 1)
    with pytest.raises(UserError, match="not found"):
        tcav.tcav_concept(checkpoint, tmp_path / "c.pt", tmp_path / "missing.pt", tmp_path / "out.csv", 1)
