"""Pixel-level explanations: metrics with known answers, localisation, faithfulness, and one toy ticket end to end."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import TOY, TOY_PRUNING, explain_into, into, make_toy_data
from ticketlens.data.prepared import TEST, load_prepared, save_prepared
from ticketlens.errors import UserError
from ticketlens.explanations import saliency as sal
from ticketlens.explanations.compare import (
    compare_maps,
    dense_seed_consistency,
    spearman_rows,
    top_mask,
    topk_iou,
)
from ticketlens.explanations.explain import CONSISTENCY_COLUMNS, SALIENCY_COLUMNS
from ticketlens.explanations.faithfulness import deletion_insertion, pixel_ranks
from ticketlens.explanations.images import AGREEMENT_COLUMNS, OUTCOME_COLUMNS, explain_images
from ticketlens.explanations.tcav import tcav_calibration
from ticketlens.explanations.tcav_stats import TEST_COLUMNS
from ticketlens.fileio import file_sha256, load_npz
from ticketlens.study import TICKET_FILES, TcavSettings, Ticket

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- comparison metrics


def test_identical_maps_agree_perfectly() -> None:
    maps = RNG.normal(size=(4, 16, 16)).astype(np.float32)
    scores = compare_maps(maps, maps.copy())
    for column in scores.columns:
        np.testing.assert_allclose(scores[column], 1.0, atol=1e-9, err_msg=column)


def test_shuffled_maps_are_unrelated() -> None:
    maps = RNG.random(size=(20, 32, 32))
    shuffled = np.stack([RNG.permutation(m.ravel()).reshape(m.shape) for m in maps])
    scores = compare_maps(maps, shuffled)
    assert abs(scores["spearman"].mean()) < 0.05
    # two independent random top-10% sets: IoU about 0.1 / 1.9
    assert scores["iou_top10"].mean() == pytest.approx(0.1 / 1.9, abs=0.03)
    assert scores["iou_top20"].mean() == pytest.approx(0.2 / 1.8, abs=0.03)
    assert scores["ssim"].mean() < 0.1


def test_an_anti_correlated_map_is_never_scored_as_consistent() -> None:
    """The issue's case: a ticket whose signed map is the dense net's negated. Taking |map| called it
    consistent; the standard maps (after Grad-CAM's ReLU) rank it below an unrelated map."""
    signed = RNG.normal(size=(6, 8, 8))
    dense, ticket = np.maximum(signed, 0), np.maximum(-signed, 0)
    scores = compare_maps(ticket, dense)
    assert (scores["spearman"] < -0.3).all()
    assert (scores["iou_top10"] == 0).all() and (scores["iou_top20"] == 0).all()
    assert np.allclose(spearman_rows(signed, -signed), -1.0)


def test_every_metric_defines_its_value_for_empty_and_constant_maps() -> None:
    empty = np.zeros((1, 8, 8))
    informative = RNG.random(size=(1, 8, 8))
    constant = np.full((1, 8, 8), 3.0)
    one_empty = compare_maps(empty, informative)
    both_empty = compare_maps(empty, empty)
    assert not one_empty.isna().any().any() and not both_empty.isna().any().any()
    assert one_empty["spearman"][0] == 0.0 and both_empty["spearman"][0] == 1.0
    assert one_empty["iou_top10"][0] == 0.0 and both_empty["iou_top10"][0] == 1.0
    assert compare_maps(constant, empty)["iou_top20"][0] == 1.0  # neither has a pixel that stands out
    assert not top_mask(empty, 0.1).any() and not top_mask(constant, 0.1).any()
    sparse = np.zeros((1, 10, 10))
    sparse[0, 0, :3] = [3.0, 2.0, 1.0]  # fewer positive pixels than the top 10%: only those count
    assert top_mask(sparse, 0.1).sum() == 3


def test_topk_mask_counts_and_iou_of_disjoint_regions() -> None:
    a = np.zeros((1, 10, 10))
    b = np.zeros((1, 10, 10))
    a[0, :1, :] = 1.0  # top 10% = first row
    b[0, -1:, :] = 1.0  # top 10% = last row
    assert top_mask(a, 0.1).sum() == 10
    assert topk_iou(a, b, 0.1)[0] == 0.0
    assert topk_iou(a, a, 0.1)[0] == 1.0


def test_scale_does_not_change_similarity() -> None:
    maps = RNG.random(size=(3, 16, 16))
    scores = compare_maps(maps, 1000 * maps)
    np.testing.assert_allclose(scores.to_numpy(), 1.0, atol=1e-9)


def test_dense_seed_consistency_compares_every_pair_of_seeds_on_the_same_probe_images() -> None:
    base = RNG.random(size=(4, 8, 8))
    seeds = {
        s: {"gradcam": base + 0.1 * s * RNG.random(size=base.shape), "probe": np.arange(4)} for s in range(3)
    }
    table = dense_seed_consistency(seeds)
    assert list(zip(table["seed"], table["other_seed"], strict=True)) == [(0, 1), (0, 2), (1, 2)]
    assert table["spearman"].between(0.5, 1.0).all()
    seeds[2]["probe"] = np.arange(1, 5)
    with pytest.raises(ValueError, match="different probe images"):
        dense_seed_consistency(seeds)


# ---------------------------------------------------------------- localisation


def test_localisation_on_a_constructed_map() -> None:
    maps = np.zeros((2, 10, 10))
    maps[0, 2:4, 2:4] = 1.0  # all mass in the box
    maps[0, 8, 8] = -5.0  # negative evidence is ignored (Grad-CAM's ReLU)
    maps[1, :, :] = 1.0  # uniform: mass share = area share
    maps[1, 9, 9] = 2.0  # peak outside the box
    boxes = np.array([[2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 5.0, 5.0]])
    masks = sal.box_masks(boxes, 10, 10)
    assert masks[0].sum() == 4 and masks[0, 2:4, 2:4].all()
    mass = sal.mass_share(maps, masks)
    assert mass[0] == pytest.approx(1.0)
    assert mass[1] == pytest.approx(25 / 101)
    np.testing.assert_array_equal(sal.pointing_hit(maps, masks), [1.0, 0.0])
    np.testing.assert_allclose(sal.area_share(masks), [0.04, 0.25])


def test_empty_and_tied_maps_score_chance_in_localisation() -> None:
    masks = sal.box_masks(np.array([[0.0, 0.0, 5.0, 5.0]]), 10, 10)
    empty = np.zeros((1, 10, 10))
    assert sal.mass_share(empty, masks)[0] == pytest.approx(0.25)  # an empty map spreads nothing: chance
    assert sal.pointing_hit(empty, masks)[0] == pytest.approx(0.25)  # not raster order's first pixel
    two_peaks = np.zeros((1, 10, 10))
    two_peaks[0, 0, 0] = two_peaks[0, 9, 9] = 1.0
    assert sal.pointing_hit(two_peaks, masks)[0] == pytest.approx(0.5)
    np.testing.assert_array_equal(sal.empty_maps(np.stack([empty[0], two_peaks[0]])), [True, False])


def test_part_masks_use_the_class_defining_parts_and_resize() -> None:
    part_map = np.zeros((1, 4, 4), dtype=np.uint8)
    part_map[0, :2, :2] = 1
    part_map[0, 2:, 2:] = 2
    masks = sal.part_masks_for(part_map, np.array([0]), {0: [2], 1: [1]}, 8, 8)
    assert masks.shape == (1, 8, 8)
    assert masks[0, 4:, 4:].all() and masks.sum() == 16


# ---------------------------------------------------------------- faithfulness


class _SumModel(torch.nn.Module):
    """Logit of class 1 grows with the pixels of the top-left quadrant; class 0 is fixed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = x[:, :, :4, :4].sum(dim=(1, 2, 3))
        return torch.stack([torch.full_like(evidence, 4.0), evidence], dim=1)


def test_perfect_map_beats_a_random_map_on_deletion_and_insertion() -> None:
    x = torch.ones(1, 1, 8, 8)
    target = torch.tensor([1])
    perfect = np.zeros((1, 8, 8))
    perfect[0, :4, :4] = 1.0
    random_map = RNG.random(size=(1, 8, 8))
    model = _SumModel()
    d_perfect, i_perfect, fractions = deletion_insertion(model, x, perfect, target, [0.0], steps=16)
    d_random, i_random, _ = deletion_insertion(model, x, random_map, target, [0.0], steps=16)
    assert fractions[0] == 0 and fractions[-1] == 1
    assert d_perfect[0] < d_random[0]
    assert i_perfect[0] > i_random[0]


def test_tied_pixels_are_removed_in_a_fixed_random_order_not_raster_order() -> None:
    ranks = pixel_ranks(np.zeros((8, 8))).numpy()
    assert sorted(ranks) == list(range(64)) and not (ranks[:8] < 8).all()
    np.testing.assert_array_equal(ranks, pixel_ranks(np.zeros((8, 8))).numpy())
    quadrant = np.zeros((8, 8))
    quadrant[:4, :4] = 1.0
    assert (pixel_ranks(quadrant).numpy().reshape(8, 8)[:4, :4] < 16).all()


# ---------------------------------------------------------------- probe set and methods


class _PoolConvNet(torch.nn.Module):
    """Grad-CAM in closed form: 2x2 average pooling, a 1x1 conv (channels p and 0.5 p), global average
    pooling and a linear head. The class-c gradient at the conv is w_c / 4 everywhere, so Grad-CAM at the
    conv is (w_c0 + 0.5 w_c1) / 4 * p at 2x2 resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = torch.nn.AvgPool2d(2)
        self.conv = torch.nn.Conv2d(1, 2, 1, bias=False)
        self.head = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 0.5]).view(2, 1, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.pool(x)).mean(dim=(2, 3)))


def test_gradcam_is_relu_at_layer_resolution_then_upsampling() -> None:
    pooled = np.array([[2.0, -2.0], [-2.0, 1.0]])
    x = torch.from_numpy(np.kron(pooled, np.ones((2, 2)))).float()[None, None].repeat(2, 1, 1, 1)
    standard, signed = sal.gradcam_standard_and_signed(_PoolConvNet().eval(), "conv", x, torch.tensor([0, 1]))
    np.testing.assert_array_equal(
        standard, sal.gradcam_maps(_PoolConvNet().eval(), "conv", x, torch.tensor([0, 1]))
    )
    # bilinear 2 -> 4 upsampling (half-pixel centres, edges clamped) is U @ cam @ U.T
    up = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    for i, scale in enumerate([(1.0 + 0.5 * 2.0) / 4, (-1.0 + 0.5 * 1.0) / 4]):
        cam = scale * pooled
        np.testing.assert_allclose(standard[i], up @ np.maximum(cam, 0) @ up.T, atol=1e-6)
        np.testing.assert_allclose(signed[i], up @ cam @ up.T, atol=1e-6)
        # the old order (upsample, then ReLU) gives another map: negative cells bleed into positive ones
        assert not np.allclose(standard[i], np.maximum(up @ cam @ up.T, 0), atol=1e-3)
    assert (standard >= 0).all() and (signed < 0).any()


def test_probe_set_is_stratified_deterministic_and_from_test() -> None:
    labels = np.arange(100) % 4
    split = np.where(np.arange(100) >= 60, 2, 0)
    a = sal.stratified_indices(labels, split, 3, seed=0)
    b = sal.stratified_indices(labels, split, 3, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(a) == 12 and (split[a] == 2).all()
    assert np.bincount(labels[a]).tolist() == [3, 3, 3, 3]
    assert not np.array_equal(a, sal.stratified_indices(labels, split, 3, seed=1))


@pytest.fixture(scope="module")
def toy_model() -> torch.nn.Module:
    from ticketlens.lottery.models import build_model

    torch.manual_seed(0)
    return build_model("convnet_mnist", 4, 1, 28, [0.5], [0.25], width=0.5).eval()


def test_maps_have_input_shape_and_are_deterministic(toy_model: torch.nn.Module) -> None:
    x = torch.rand(5, 1, 28, 28)
    target = torch.tensor([0, 1, 2, 3, 0])
    first = sal.explain_probe(toy_model, x, target, toy_model.gradcam_layer)
    second = sal.explain_probe(toy_model, x, target, toy_model.gradcam_layer)
    assert set(first) == {"gradcam", "gradcam_signed", "saliency"}
    for method, maps in first.items():
        assert maps.shape == (5, 28, 28) and maps.dtype == np.float32
        np.testing.assert_array_equal(maps, second[method])
    assert (first["saliency"] >= 0).all()
    assert set(sal.explain_probe(toy_model, x, target, None)) == {"saliency"}  # e.g. lenet300


def test_randomized_copy_keeps_zero_pattern_and_changes_weights(toy_model: torch.nn.Module) -> None:
    model = copy.deepcopy(toy_model)
    with torch.no_grad():
        model.features.conv1.weight[0] = 0.0
    clone = sal.randomized_copy(model, seed=3)
    again = sal.randomized_copy(model, seed=3)
    assert (clone.features.conv1.weight[0] == 0).all()
    assert not torch.equal(clone.features.conv2.weight, model.features.conv2.weight)
    assert torch.equal(clone.features.conv2.weight, again.features.conv2.weight)
    assert torch.equal(model.features.conv2.weight, toy_model.features.conv2.weight)  # original untouched


# ---------------------------------------------------------------- one toy ticket end to end

PROBE_PER_CLASS = 3
TCAV = TcavSettings(layers=None, n_random_sets=3, set_size=12, inputs_per_class=8, target_classes="all", alpha=0.05, classifier="fastcav",
                    n_counterparts=1, n_null_draws=19, n_calibration_sets=1)  # fmt: skip


def write_image_set(path: Path, name: str, images: torch.Tensor) -> Path:
    torch.save(
        {"name": name, "images": images, "indices": torch.zeros(0, dtype=torch.int64), "source": "test"}, path
    )
    return path


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A dense net and its round-1 ticket on the toy data, 3 random sets, a calibration set and a concept set."""
    from ticketlens.lottery.rounds import train_ticket

    root = tmp_path_factory.mktemp("study")
    data = make_toy_data()
    save_prepared(data, root / "data.pt")
    train = (root / "data.pt", TOY.model, TOY.model_width, TOY.training, TOY_PRUNING)
    train_ticket(Ticket("toy", 0, "ticket", 0), *train, *into(root / "r0"))
    train_ticket(
        Ticket("toy", 0, "ticket", 1),
        *train,
        *into(root / "r1"),
        previous=root / "r0" / TICKET_FILES.checkpoint,
    )
    generator = torch.Generator().manual_seed(0)
    sets = [
        {"name": f"random_{i}", "images": torch.randint(0, 256, (12, 1, 28, 28), generator=generator, dtype=torch.uint8),
         "indices": torch.zeros(0, dtype=torch.int64), "source": "test"}
        for i in range(4)
    ]  # fmt: skip
    randoms = [root / "random_sets.pt", root / "calibration_sets.pt"]
    torch.save({"sets": sets[:3]}, randoms[0])
    torch.save({"sets": sets[3:]}, randoms[1])
    concept = write_image_set(root / "band0.pt", "band0", data.images[data.labels == 0][:12])
    return {"root": root, "data": root / "data.pt", "randoms": randoms, "concept": concept}


def explain(
    study: dict, ticket: str, out: Path, probe_per_class: int = PROBE_PER_CLASS, **references: Path
) -> None:
    """explain_ticket of ticket folder `ticket` (r0, r1) into `out`; references: dense_maps, previous_maps."""
    checkpoint = study["root"] / ticket / TICKET_FILES.checkpoint
    explain_into(checkpoint, study["data"], probe_per_class, out, **references)


def null(study: dict, ticket: str, out: Path) -> None:
    """tcav_calibration (the calibration sets through the concept test) of ticket folder `ticket` into `out`."""
    checkpoint = study["root"] / ticket / TICKET_FILES.checkpoint
    tcav_calibration(checkpoint, study["data"], *study["randoms"], TCAV, out / TICKET_FILES.tcav_calibration)


def test_explain_ticket_and_tcav_calibration_write_every_target_in_the_contract_format(
    toy_study: dict,
) -> None:
    root = toy_study["root"]
    dense_maps = root / "r0" / TICKET_FILES.saliency_maps
    explain(toy_study, "r0", root / "r0")
    explain(toy_study, "r1", root / "r1", dense_maps=dense_maps, previous_maps=dense_maps)
    for ticket in ("r0", "r1"):
        assert not (root / ticket / "tcav").exists()  # the TCAV null is a step of its own
        null(toy_study, ticket, root / ticket)
        for name in (
            "saliency.npz",
            "saliency.csv",
            "consistency.csv",
            "tcav/calibration.csv",
        ):
            assert (root / ticket / name).exists(), name
        assert not list((root / ticket).rglob("*.tmp"))
    with np.load(root / "r1" / "saliency.npz") as npz:
        assert set(npz.files) == {"gradcam", "gradcam_signed", "saliency", "probe", "labels", "preds", "logits",
                                  "test_indices", "test_correct", "checkpoint_sha256"}  # fmt: skip
        assert str(npz["checkpoint_sha256"]) == file_sha256(root / "r1" / "checkpoint.pt")
        assert npz["gradcam"].shape == npz["gradcam_signed"].shape == npz["saliency"].shape == (12, 28, 28)
        assert (npz["gradcam"] >= 0).all()  # standard Grad-CAM: the signed map is stored beside it
        # ReLU first and non-negative interpolation weights: the standard map bounds the signed one above
        assert (npz["gradcam"] >= npz["gradcam_signed"] - 1e-6).all() and (npz["gradcam_signed"] < 0).any()
        assert npz["logits"].shape == (12, 4) and npz["logits"].dtype == np.float32
        np.testing.assert_array_equal(npz["preds"], npz["logits"].argmax(1))
        # per-image test outcomes: the probe images are test images, so they must agree with the probe
        position = {int(i): k for k, i in enumerate(npz["test_indices"])}
        outcomes = npz["test_correct"][[position[int(i)] for i in npz["probe"]]]
        np.testing.assert_array_equal(outcomes, npz["preds"] == npz["labels"])
        assert len(npz["test_correct"]) == 80 and npz["test_correct"].dtype == bool
    table = pd.read_csv(root / "r1" / "saliency.csv")
    assert list(table.columns) == SALIENCY_COLUMNS and len(table) == 24
    assert table[["box_mass", "part_mass"]].isna().all().all()  # toy data has no boxes or parts
    assert table["empty"].dtype == bool
    assert table[["deletion_auc", "insertion_auc"]].notna().all().all()
    dense = pd.read_csv(root / "r0" / "consistency.csv")
    assert list(dense.columns) == CONSISTENCY_COLUMNS and set(dense["reference"]) == {"random"}
    ticket = pd.read_csv(root / "r1" / "consistency.csv")
    assert set(ticket["reference"]) == {"random", "dense", "previous"}
    means = ticket.groupby("reference")["spearman"].mean()
    assert means["dense"] > means["random"]  # a ticket is closer to its dense net than the random floor
    null_table = pd.read_csv(root / "r1" / "tcav" / "calibration.csv")
    assert list(null_table.columns) == TEST_COLUMNS
    assert len(null_table) == 2 * 4  # the calibration set x layers x classes
    assert set(null_table["concept"]) == {"random_3"} and (null_table["n_null"] == 19).all()


def test_explain_is_bitwise_repeatable(toy_study: dict, tmp_path: Path) -> None:
    for out in ("a", "b"):
        explain(toy_study, "r0", tmp_path / out)
        null(toy_study, "r0", tmp_path / out)
    for name in ("saliency.csv", "consistency.csv", "tcav/calibration.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with np.load(tmp_path / "a" / "saliency.npz") as a, np.load(tmp_path / "b" / "saliency.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


def test_reference_with_other_probe_images_is_refused(toy_study: dict, tmp_path: Path) -> None:
    explain(toy_study, "r0", tmp_path / "dense", probe_per_class=2)
    with pytest.raises(UserError, match="other probe images"):
        explain(toy_study, "r1", tmp_path / "t", dense_maps=tmp_path / "dense" / TICKET_FILES.saliency_maps)


def test_a_swapped_data_file_is_refused_by_the_hash_the_checkpoint_carries(
    toy_study: dict, tmp_path: Path
) -> None:
    """Issue 22 item 5: another valid data.pt (`cp -p` from another study) in place of the one a ticket was
    trained on: explaining it or testing its concepts is refused in one line with the command that re-makes
    the data and everything from it."""
    other = tmp_path / "data.pt"
    save_prepared(make_toy_data(seed=1), other)
    checkpoint = toy_study["root"] / "r1" / TICKET_FILES.checkpoint
    expected = (
        rf"{other} is not the data {checkpoint} was trained on .* snakemake --cores all --forcerun {other}"
    )
    with pytest.raises(UserError, match=expected):
        explain_into(checkpoint, other, PROBE_PER_CLASS, tmp_path / "out")
    with pytest.raises(UserError, match=expected):
        tcav_calibration(checkpoint, other, *toy_study["randoms"], TCAV, tmp_path / "calibration.csv")
    with pytest.raises(UserError, match=expected):
        explain_images(checkpoint, other, 2, None, tmp_path / "out" / TICKET_FILES.image_maps,
                       tmp_path / "out" / TICKET_FILES.agreement)  # fmt: skip
    assert not (tmp_path / "out" / TICKET_FILES.saliency_maps).exists()


def test_outcomes_and_image_agreement_cover_every_test_image_and_the_explained_subset(
    toy_study: dict,
) -> None:
    root = toy_study["root"]
    explain(toy_study, "r0", root / "r0")
    outcomes = pd.read_csv(root / "r0" / TICKET_FILES.outcomes)
    data = load_prepared(toy_study["data"])
    test = data.indices(TEST).numpy()
    assert list(outcomes.columns) == OUTCOME_COLUMNS
    assert outcomes["image"].tolist() == test.tolist()
    assert (outcomes["correct"] == (outcomes["predicted"] == outcomes["label"])).all()
    # the margin is negative exactly where the image is misclassified; the loss is a cross-entropy
    assert ((outcomes["margin"] > 0) == outcomes["correct"]).all() and (outcomes["loss"] >= 0).all()
    npz = load_npz(root / "r0" / TICKET_FILES.saliency_maps, "maps")
    assert npz["test_correct"].tolist() == outcomes["correct"].tolist()

    def images(ticket: str, **dense: Path) -> pd.DataFrame:
        folder = root / ticket
        checkpoint = folder / TICKET_FILES.checkpoint
        explain_images(checkpoint, toy_study["data"], 2, None, folder / TICKET_FILES.image_maps,
                       folder / TICKET_FILES.agreement, **dense)  # fmt: skip
        return pd.read_csv(folder / TICKET_FILES.agreement)

    dense = images("r0")
    ticket = images("r1", dense_maps=root / "r0" / TICKET_FILES.image_maps)
    assert list(ticket.columns) == AGREEMENT_COLUMNS
    n_classes = len(np.unique(data.labels[data.split == TEST].numpy()))
    assert ticket.groupby("method")["image"].nunique().eq(2 * n_classes).all()
    assert set(ticket["image"]) <= set(test)
    assert np.allclose(dense.loc[dense["method"] == "saliency", "spearman"], 1.0)  # the dense net is itself
    assert ticket["spearman"].between(-1, 1).all() and ticket["spearman"].lt(1 - 1e-9).any()
