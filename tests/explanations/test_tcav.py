"""TCAV jobs: hooks against captum, the "sgd" path against captum's own TCAV loop, the job files (format,
bytes, lean imports, errors), and the torch-free per-ticket statistics (`tcav_stats`)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from captum_reference import captum_tcav_rows
from ticketlens.errors import UserError
from ticketlens.explanations import tcav
from ticketlens.explanations.cav import LayerRows, class_scores, fit_rows
from ticketlens.explanations.sgd_reference import CAV_SEED
from ticketlens.explanations.tcav_stats import (
    TEST_COLUMNS,
    calibration_rates,
    calibration_summary,
    compare_tcav,
    summarize_tcav,
)
from ticketlens.study import TcavSettings

ALPHA = 0.05


# ---------------------------------------------------------------- activations, gradients, captum


@pytest.fixture(scope="module")
def small_setup() -> dict:
    from ticketlens.lottery.models import build_model

    torch.manual_seed(0)
    model = build_model("convnet_mnist", 3, 1, 16, [0.5], [0.25], width=0.5).eval()
    g = torch.Generator().manual_seed(1)
    randoms = [(f"random_{i}", torch.rand(10, 1, 16, 16, generator=g)) for i in range(3)]
    concept = torch.rand(10, 1, 16, 16, generator=g)
    concept[:, :, :4] = 1.0  # a bright band
    inputs = {k: torch.rand(6, 1, 16, 16, generator=g) for k in range(3)}
    return {"model": model, "randoms": randoms, "concept": ("band", concept), "inputs": inputs}


def test_hooks_give_captums_activations_and_gradients(small_setup: dict) -> None:
    from captum.attr import LayerActivation, LayerGradientXActivation

    from ticketlens.lottery.models import get_module

    model = small_setup["model"]
    layers = list(model.tcav_layers)
    x = small_setup["inputs"][1]
    ours = tcav.layer_activations(model, layers, x)
    theirs = LayerActivation(model, [get_module(model, name) for name in layers]).attribute(x)
    gradients = tcav.layer_gradients(model, layers, x, target=2)
    for name, activation in zip(layers, theirs, strict=True):
        torch.testing.assert_close(ours[name], activation.reshape(len(x), -1), rtol=0, atol=0)
        explainer = LayerGradientXActivation(model, get_module(model, name), multiply_by_inputs=False)
        expected = explainer.attribute(x, target=2).reshape(len(x), -1)
        torch.testing.assert_close(gradients[name], expected, rtol=0, atol=0)
        assert gradients[name].abs().sum() > 0


def engine_rows(setup: dict, model: torch.nn.Module | None = None) -> pd.DataFrame:
    """The concept against each random set through the batched engine's "sgd" classifier, seeded like the
    captum loop (one fixed seed): one row per CAV and class, as `captum_tcav_rows` writes them."""
    model = model or setup["model"]
    layers = list(model.tcav_layers)
    name, images = setup["concept"]
    classes = sorted(setup["inputs"])
    inputs = torch.cat([setup["inputs"][k] for k in classes])
    input_classes = torch.arange(len(classes)).repeat_interleave(6)
    gradients = {layer: [] for layer in layers}
    for k in classes:
        for layer, g in tcav.layer_gradients(model, layers, setup["inputs"][k], k).items():
            gradients[layer].append(g)
    sets = [images, *(x for _, x in setup["randoms"])]
    activations = tcav.layer_activations(model, layers, torch.cat(sets))
    assert len(inputs) == len(input_classes)
    records = []
    for layer in layers:
        rows = LayerRows.build(activations[layer], torch.cat(gradients[layer]), keep_features=True)
        count = len(setup["randoms"])
        positive = torch.arange(10).expand(count, -1)
        negative = torch.arange(10, 10 * (count + 1)).view(count, 10)
        fit = fit_rows(rows, positive, negative, "sgd", [CAV_SEED] * count)
        scores = class_scores(fit.derivatives, input_classes, range(len(classes)))
        for i, (random_name, _) in enumerate(setup["randoms"]):
            for k in classes:
                records.append((name, layer, k, random_name, float(scores[i, k]), float(fit.accuracy[i])))
    return pd.DataFrame(
        records, columns=["concept", "layer", "target_class", "random_set", "score", "cav_accuracy"]
    )


def test_sgd_engine_reproduces_captum_tcav_exactly(small_setup: dict, tmp_path: Path) -> None:
    ours = engine_rows(small_setup)
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
    # the same sign counts (captum divides in float32)
    np.testing.assert_array_equal(
        merged["score_ours"].astype(np.float32), merged["score_captum"].astype(np.float32)
    )
    np.testing.assert_array_equal(merged["cav_accuracy_ours"], merged["cav_accuracy_captum"])
    assert merged["score_ours"].nunique() > 1  # not a trivially constant comparison


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
    assert not engine_rows(small_setup)["score"].equals(engine_rows(small_setup, changed)["score"])


# ---------------------------------------------------------------- the job functions


def settings(**changes: object) -> TcavSettings:
    values = {"layers": None, "n_random_sets": 4, "set_size": 8, "inputs_per_class": 5, "target_classes": "all", "alpha": ALPHA,
              "classifier": "fastcav", "n_counterparts": 2, "n_null_draws": 39, "n_calibration_sets": 2}  # fmt: skip
    return TcavSettings(**{**values, **changes})


@pytest.fixture(scope="module")
def ticket_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A trained toy ticket (seed 0 and a copy claiming seed 1), its data, 6 random sets and a concept."""
    from helpers import TOY, TOY_PRUNING, into, make_toy_data
    from ticketlens.data.concepts import make_random_sets
    from ticketlens.data.prepared import save_prepared
    from ticketlens.lottery.rounds import train_ticket
    from ticketlens.study import TICKET_FILES, Ticket

    root = tmp_path_factory.mktemp("tcav_job")
    data = make_toy_data(n=200)
    save_prepared(data, root / "data.pt")
    train_ticket(Ticket("toy", 0, "ticket", 0), root / "data.pt", TOY.model, TOY.model_width, TOY.training,
                 TOY_PRUNING, *into(root / "r0"))  # fmt: skip
    checkpoint = root / "r0" / TICKET_FILES.checkpoint
    other_seed = torch.load(checkpoint, weights_only=True)
    other_seed["seed"] = 1
    torch.save(other_seed, root / "seed1.pt")
    make_random_sets(root / "data.pt", 4, 2, 8, 0, root / "random_sets.pt", root / "calibration_sets.pt")
    held_out = torch.load(root / "calibration_sets.pt", weights_only=True)["sets"][0]
    torch.save(held_out, root / "random_4.pt")  # the first calibration set, as a concept set file
    concept = root / "band.pt"
    images = data.images[data.labels == 2][:8]
    torch.save({"name": "band", "images": images, "indices": torch.zeros(0, dtype=torch.int64), "source": "test"},
               concept)  # fmt: skip
    return {"root": root, "checkpoint": checkpoint, "seed1": root / "seed1.pt", "data": root / "data.pt",
            "random": root / "random_sets.pt", "calibration": root / "calibration_sets.pt",
            "held_out": root / "random_4.pt", "concept": concept}  # fmt: skip


def run_concept(files: dict, out: Path, checkpoint: Path | None = None, **changes: object) -> pd.DataFrame:
    checkpoint = checkpoint or files["checkpoint"]
    return tcav.tcav_concept(
        checkpoint, files["data"], files["random"], files["concept"], settings(**changes), out
    )


def test_tcav_concept_writes_one_row_per_layer_and_class_reproducibly(
    ticket_files: dict, tmp_path: Path
) -> None:
    table = run_concept(ticket_files, tmp_path / "a.csv")
    written = pd.read_csv(tmp_path / "a.csv")
    assert list(written.columns) == TEST_COLUMNS and len(written) == 2 * 4  # 2 layers x 4 classes
    assert (written["concept"] == "band").all() and (written["n_null"] == 39).all()
    assert written["p_value"].between(2 / 40, 1).all() and set(written["side"]) <= {-1, 0, 1}
    pd.testing.assert_frame_equal(written, table.reset_index(drop=True), check_dtype=False)
    run_concept(ticket_files, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()  # same seed, same bytes
    run_concept(ticket_files, tmp_path / "c.csv", checkpoint=ticket_files["seed1"])
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()  # the ticket seeds the fits


def test_target_classes_select_the_rows_and_the_rest_is_unchanged(ticket_files: dict, tmp_path: Path) -> None:
    every = run_concept(ticket_files, tmp_path / "all.csv")
    two = run_concept(ticket_files, tmp_path / "two.csv", target_classes=2)  # evenly spaced: first and last
    assert sorted(set(two["target_class"])) == [0, 3] and len(two) == 2 * 2
    names = load_class_names(ticket_files["data"])
    named = run_concept(ticket_files, tmp_path / "named.csv", target_classes=(names[1],))
    assert set(named["target_class"]) == {1}
    # a class's row depends on its own inputs only: selecting classes leaves its scores as they were
    pd.testing.assert_frame_equal(
        named.reset_index(drop=True)[["layer", "mean", "effect", "p_value"]],
        every[every["target_class"] == 1].reset_index(drop=True)[["layer", "mean", "effect", "p_value"]],
    )
    assert tcav.target_class_ids(names, 10) == [0, 1, 2, 3] and tcav.target_class_ids(names, "all") == [
        0,
        1,
        2,
        3,
    ]
    with pytest.raises(UserError, match="target_classes: unknown class 'Nope'"):
        tcav.target_class_ids(names, ("Nope",))


def load_class_names(path: Path) -> list[str]:
    from ticketlens.data.prepared import load_prepared

    return list(load_prepared(path).class_names)


def test_tcav_calibration_runs_calibration_sets_through_the_concept_path(
    ticket_files: dict, tmp_path: Path
) -> None:
    files = ticket_files
    null = tcav.tcav_calibration(files["checkpoint"], files["data"], files["random"], files["calibration"], settings(),
                          tmp_path / "calibration.csv")  # fmt: skip
    assert list(pd.read_csv(tmp_path / "calibration.csv").columns) == TEST_COLUMNS
    assert sorted(null["concept"].unique()) == ["random_4", "random_5"] and len(null) == 2 * 2 * 4
    # the same function as a concept: random_4 as "the concept" gives the same rows
    as_concept = tcav.tcav_concept(files["checkpoint"], files["data"], files["random"], files["held_out"],
                                   settings(), tmp_path / "r4.csv")  # fmt: skip
    pd.testing.assert_frame_equal(null[null["concept"] == "random_4"].reset_index(drop=True), as_concept)


def test_a_tcav_job_imports_neither_sklearn_nor_captum(ticket_files: dict, tmp_path: Path) -> None:
    files = ticket_files
    code = (
        "import sys\n"
        "from ticketlens.cli import run\n"
        f"code = run(['tcav-concept', '--checkpoint', {str(files['checkpoint'])!r}, '--data', {str(files['data'])!r},"
        f" '--random', {str(files['random'])!r}, '--concept', {str(files['concept'])!r},"
        f" '--tcav', {settings().to_json()!r}, '--out', {str(tmp_path / 'x.csv')!r}])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'captum'))\n"
        "assert code == 0 and not loaded, (code, loaded)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "x.csv").exists()


def test_bad_settings_are_one_clear_error(ticket_files: dict, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="n_counterparts is 4: it must be at least 1 and below n_random_sets"):
        run_concept(ticket_files, tmp_path / "x.csv", n_counterparts=4)
    assert not (tmp_path / "x.csv").exists()
    for wrong in (ticket_files["concept"], ticket_files["data"]):  # a concept set, prepared data
        with pytest.raises(
            UserError, match=f"random sets file {wrong} has no 'sets' list: delete it and re-run"
        ):
            run_concept({**ticket_files, "random": wrong}, tmp_path / "x.csv")
    torch.save({"sets": [{"name": "random_0"}]}, tmp_path / "no_images.pt")
    with pytest.raises(UserError, match="has no 'images' entry"):
        run_concept({**ticket_files, "random": tmp_path / "no_images.pt"}, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


# ---------------------------------------------------------------- per-ticket statistics


def rows_of(
    concept: str, p_values: list[float], sides: list[int], p_learnable: float = 0.001, **more: object
):
    """Test rows of one concept at layer l1, one per class."""
    count = len(p_values)
    return pd.DataFrame({"concept": concept, "layer": "l1", "target_class": range(count), "mean": 0.5,
                         "p_value": p_values, "side": sides, "p_learnable": p_learnable, **more})  # fmt: skip


def test_summary_applies_holm_over_the_ticket_and_the_gate() -> None:
    rows = pd.concat([
        rows_of("strong", [0.001, 0.02], [1, -1]),
        rows_of("weak", [0.01, 0.9], [-1, 1]),
        rows_of("unlearnable", [0.001, 0.001], [1, 1], p_learnable=0.3),
    ])  # fmt: skip
    summary = summarize_tcav(rows, ALPHA).set_index(["concept", "target_class"])
    # 6 tests: sorted 0.001 x3 -> 0.006, 0.005, 0.004 -> running max 0.006; 0.01 x 3 = 0.03; 0.02 x 2
    assert summary.loc[("strong", 0), "p_holm"] == pytest.approx(0.006)
    assert summary.loc[("weak", 0), "p_holm"] == pytest.approx(0.03)
    assert summary.loc[("strong", 1), "p_holm"] == pytest.approx(0.04)
    assert (
        summary.loc[("strong", 0), "direction"] == "up" and summary.loc[("strong", 1), "direction"] == "down"
    )
    assert summary.loc[("weak", 0), "significant"] and not summary.loc[("weak", 1), "significant"]
    assert not summary.loc["unlearnable", "significant"].any()
    assert summarize_tcav(rows.iloc[:0], ALPHA).empty


def test_calibration_sets_are_judged_as_one_more_concept_of_the_ticket() -> None:
    concepts = rows_of("real", [0.001, 0.5], [1, 1])
    calibration = pd.concat([
        rows_of("random_20", [0.0015, 0.04], [1, -1]),  # Holm over 4: 0.0045 and 0.08
        rows_of("random_21", [0.03, 0.6], [1, 1], p_learnable=0.5),  # rejected before correction only
    ])  # fmt: skip
    counts = calibration_rates(concepts, calibration, ALPHA)
    assert counts == {"rows": 4, "sets": 2, "rejected_uncorrected": 3, "rejected_gated": 2, "rejected_holm": 1,
                      "sets_flagged_holm": 1}  # fmt: skip
    pooled = calibration_summary([counts, counts])
    assert pooled["rows"] == 8 and pooled["rate_uncorrected"] == 0.75 and pooled["rate_holm"] == 0.25
    assert pooled["rate_sets_flagged_holm"] == 0.5 and pooled["sets_flagged_holm"] == 2
    assert np.isnan(calibration_summary([])["rate_holm"])


def test_compare_tcav_counts_changed_decisions() -> None:
    dense = summarize_tcav(rows_of("a", [0.001, 0.001, 0.9], [1, -1, 1], mean=[0.9, 0.1, 0.5]), ALPHA)
    same = compare_tcav(dense, dense)
    assert (
        same["spearman"] == pytest.approx(1.0)
        and same["jaccard"] == 1.0
        and not same["changes"]["changed"].any()
    )
    ticket = summarize_tcav(rows_of("a", [0.001, 0.9, 0.001], [-1, -1, 1], mean=[0.1, 0.5, 0.9]), ALPHA)
    result = compare_tcav(ticket, dense)
    changes = result["changes"].set_index("target_class")
    # class 0 flipped direction, class 1 lost, class 2 gained significance
    assert changes["changed"].all() and changes.loc[0, "decision_ticket"] == "down"
    assert changes.loc[1, "delta"] == pytest.approx(0.4)
    assert result["jaccard"] == 0.0 and result["n_significant_ticket"] == result["n_significant_dense"] == 2
    assert result["spearman"] == pytest.approx(-0.5)
