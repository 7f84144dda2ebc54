"""Known answers on synthetic birds: explanations must find what the generator put there.

One small synthbirds set is generated with and one without the background shortcut; a conv net is
trained on each (seconds on 2 cores), and an untrained net of the same architecture is the negative
control. Every check is a function of the explanation outputs that returns pass/fail, and each is
asserted both ways: it passes on the trained model and fails on the untrained one, so the tests can
fail. Everything runs through the real pipeline functions (prepare, random/concept sets, train_ticket,
explain_ticket, tcav_null, tcav_concept, summarize_tcav).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import data_settings, dataset_settings, training_settings
from ticketlens.data.prepared import atomic_save, load_prepared
from ticketlens.study import TICKET_FILES, PruningSettings, TcavSettings, Ticket

pytestmark = pytest.mark.slow

N_CLASSES = 6  # 3 wing colours x 2 breast patterns
R = 20  # TCAV power grows like sqrt(R): random-vs-random scores sit near 0 or 1, so the null is wide
SET_SIZE = 12
ALPHA = 0.05
TRAIN = {"optimizer": "adam", "lr": 0.003, "batch_size": 64, "eval_every": 100}  # the rest: schema defaults
PRUNING = PruningSettings(scope="global", rate_conv=0.4, rate_fc=0.5, rate_output=0.25, exclude=(),
                          one_shot=False, rewind_iteration=0)  # fmt: skip
PROBE_PER_CLASS = 8
BLUE = "has_wing_color::blue"  # defines classes 0 and 3


def tcav_settings(layers: list[str]) -> TcavSettings:
    return TcavSettings(
        layers=tuple(layers), n_random_sets=R, set_size=SET_SIZE, inputs_per_class=20, alpha=ALPHA
    )


def prepare(root: Path, rate: float) -> Path:
    from ticketlens.data.synthbirds import prepare_synthbirds

    settings = data_settings("synthbirds", root=str(root / f"raw_{rate}"), n_classes=N_CLASSES,
                             images_per_class=100, generate_size=64, image_size=32, shortcut_rate=rate,
                             generator_seed=0, validation_fraction=0.1, crop_to_box=False)  # fmt: skip
    out = root / f"data_{rate}" / "data.pt"
    prepare_synthbirds(settings, out)
    return out


def train(data: Path, out: Path, iterations: int) -> tuple[Path, float]:
    from ticketlens.lottery import train_ticket

    training = training_settings(**TRAIN, iterations=iterations)
    ticket = Ticket("synthbirds", 0, "ticket", 0)
    metrics = train_ticket(ticket, data, "conv4", 0.25, training, PRUNING, out, threads=1)
    return out / TICKET_FILES.checkpoint, float(metrics["test_accuracy"])


def untrained_copy(checkpoint: Path, out: Path) -> Path:
    """The same checkpoint at its initial weights: same architecture, no learning."""
    state = torch.load(checkpoint, weights_only=True)
    state["state_dict"] = state["rewind_state"]
    atomic_save(state, out)
    return out


def scene_set(scene: int, path: Path) -> Path:
    """Bird-free background scenes of one class's shortcut scene: the background concept."""
    from PIL import Image

    from ticketlens.data.synthbirds_drawing import draw_background

    rng = np.random.default_rng(1000 + scene)
    images = [
        np.asarray(
            Image.fromarray(draw_background(scene, N_CLASSES, 64, rng)).resize((32, 32), Image.Resampling.BOX)
        )
        for _ in range(SET_SIZE)
    ]
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    atomic_save({"name": f"scene_{scene}", "images": tensor, "indices": torch.zeros(0, dtype=torch.int64),
                 "source": "synthbirds backgrounds"}, path)  # fmt: skip
    return path


def run_tcav(study: dict, model: str, concepts: list[Path]) -> pd.DataFrame:
    """TCAV summary (last layer) of `concepts` for one model, through tcav_concept and summarize_tcav."""
    from ticketlens.explanations.tcav import summarize_tcav, tcav_concept

    folder = study[model]
    rows = []
    for concept in concepts:
        out = folder / "tcav" / f"{concept.stem}.csv"
        if not out.exists():
            tcav_concept(folder / TICKET_FILES.checkpoint, concept, folder / TICKET_FILES.tcav_cache, out, 1)
        rows.append(pd.read_csv(out))
    return summarize_tcav(pd.concat(rows), pd.read_csv(folder / TICKET_FILES.tcav_null), ALPHA)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from ticketlens.data.concepts import make_concept_set, make_random_sets
    from ticketlens.explanations.explain import explain_ticket
    from ticketlens.explanations.tcav import tcav_null
    from ticketlens.models import build_model

    pytest.importorskip("PIL")
    root = tmp_path_factory.mktemp("birds")
    clean, shortcut = prepare(root, 0.0), prepare(root, 1.0)
    randoms = [root / "sets" / f"random_{i}.pt" for i in range(R + 1)]  # the last one is a random "concept"
    make_random_sets(clean, R + 1, SET_SIZE, 0, randoms)
    layer = build_model("conv4", N_CLASSES, 3, 32, [0.5] * 3, [0.25] * 3, width=0.25).tcav_layers[-1]
    tcav = tcav_settings([layer])
    options = dataset_settings("synthbirds").concept_options  # the schema's defaults
    make_concept_set(clean, "synthbirds", BLUE, SET_SIZE, options, randoms, root / "sets" / "blue.pt")
    study = {"blue": root / "sets" / "blue.pt", "random": randoms[R],
             "scenes": [scene_set(k, root / "sets" / f"scene_{k}.pt") for k in range(N_CLASSES)]}  # fmt: skip
    models = {}
    models["clean"], study["clean_accuracy"] = train(clean, root / "clean", 300)
    models["shortcut"], study["shortcut_accuracy"] = train(shortcut, root / "shortcut", 200)
    models["untrained"] = untrained_copy(models["clean"], root / "untrained" / "checkpoint.pt")
    for name, checkpoint in models.items():
        data = shortcut if name == "shortcut" else clean
        folder = checkpoint.parent
        explain_ticket(checkpoint, data, PROBE_PER_CLASS, None, folder)
        cache, null = folder / TICKET_FILES.tcav_cache, folder / TICKET_FILES.tcav_null
        tcav_null(checkpoint, data, randoms[:R], tcav.inputs_per_class, tcav.layers, cache, null)
        study[name] = folder
    study["data"] = load_prepared(clean)
    return study


# ---------------------------------------------------------------- the checks


def part_mass_check(folder: Path) -> tuple[bool, float]:
    """Grad-CAM mass inside the class-defining parts is well above their area share (the mass of a map
    that ignores the image): at least 3.5 times as large, averaged over the probe set."""
    table = pd.read_csv(folder / "saliency.csv")
    gradcam = table[table["method"] == "gradcam"]
    ratio = float(gradcam["part_mass"].mean() / gradcam["part_area"].mean())
    return ratio >= 3.5, ratio


def defining_concept_check(summary: pd.DataFrame, defining: list[int]) -> tuple[bool, dict]:
    """The concept is significant and positive for each class it defines (Bonferroni over those classes)
    and selective: its mean score on those classes exceeds its mean on the other classes by > 0.4."""
    scores = summary.set_index("target_class")
    p = scores.loc[defining, "p_value"] * len(defining)
    positive = (scores.loc[defining, "mean"] > scores.loc[defining, "null_mean"]).all()
    others = [k for k in scores.index if k not in defining]
    selectivity = float(scores.loc[defining, "mean"].mean() - scores.loc[others, "mean"].mean())
    passed = bool((p < ALPHA).all() and positive and selectivity > 0.4)
    return passed, {"p_bonferroni": p.round(4).tolist(), "selectivity": round(selectivity, 3)}


def shortcut_concept_check(summary: pd.DataFrame) -> tuple[bool, dict]:
    """Every class's background scene raises that class: score > 0.5 for all k on the diagonal, and
    the diagonal mean exceeds the off-diagonal mean by > 0.25."""
    matrix = summary.pivot(index="concept", columns="target_class", values="mean")
    diagonal = np.array([matrix.loc[f"scene_{k}", k] for k in range(N_CLASSES)])
    off = (matrix.to_numpy().sum() - diagonal.sum()) / (matrix.size - N_CLASSES)
    passed = bool((diagonal > 0.5).all() and diagonal.mean() - off > 0.25)
    return passed, {"diagonal": diagonal.round(2).tolist(), "off_diagonal": round(float(off), 3)}


def background_mass(study: dict, folder: Path) -> float:
    """Share of Grad-CAM mass outside the bird box, for the class the model predicts, on all test images."""
    from ticketlens.explanations import saliency as sal
    from ticketlens.lottery import load_model

    data = study["data"]
    model = load_model(folder / TICKET_FILES.checkpoint)
    test = data.indices(2)
    x = data.float_images(test)
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    maps = sal.gradcam_maps(model, model.gradcam_layer, x, predicted)
    box = sal.box_masks(data.extras["boxes"][test].numpy(), 32, 32)
    return float(np.nanmean(1.0 - sal.mass_share(maps, box)))


# ---------------------------------------------------------------- the tests


def test_models_learn_the_task(study: dict) -> None:
    assert study["clean_accuracy"] > 0.85
    # test backgrounds are random, so a shortcut model loses most of its accuracy there
    assert study["shortcut_accuracy"] < study["clean_accuracy"] - 0.3


def test_gradcam_mass_is_on_the_defining_parts(study: dict) -> None:
    passed, ratio = part_mass_check(study["clean"])
    assert passed, f"part mass / part area = {ratio:.2f}"
    failed, ratio = part_mass_check(study["untrained"])
    assert not failed, f"the check passes on an untrained model: ratio {ratio:.2f}"


def test_tcav_marks_the_defining_concept_and_not_a_random_one(study: dict) -> None:
    # the family is what a ticket's summary holds: every concept tested on it (here 8 x 6 classes).
    # The reference t-test is anti-conservative for a fixed positive set (its R CAVs share it), so a
    # random set can reach uncorrected p ~ 0.003 for some class; Bonferroni over the family absorbs it.
    summary = run_tcav(study, "clean", [study["blue"], study["random"], *study["scenes"]])
    passed, detail = defining_concept_check(summary[summary["concept"] == BLUE], [0, 3])
    assert passed, detail
    random_rows = summary[summary["concept"] == f"random_{R}"]
    assert not random_rows["significant"].any(), random_rows.to_string()
    untrained = run_tcav(study, "untrained", [study["blue"]])
    failed, detail = defining_concept_check(untrained, [0, 3])
    # on the untrained net the t-test alone often says "significant" (consistent random features);
    # the direction and class selectivity are what fail
    assert not failed, f"the check passes on an untrained model: {detail}"


def test_shortcut_model_uses_the_background(study: dict) -> None:
    shortcut = background_mass(study, study["shortcut"])
    clean = background_mass(study, study["clean"])
    untrained = background_mass(study, study["untrained"])
    assert shortcut > clean + 0.15, (shortcut, clean)
    assert not untrained > clean + 0.15, (
        f"the check passes on an untrained model: {untrained:.3f} vs {clean:.3f}"
    )
    passed, detail = shortcut_concept_check(run_tcav(study, "shortcut", study["scenes"]))
    assert passed, detail
    for name in ("clean", "untrained"):
        failed, detail = shortcut_concept_check(run_tcav(study, name, study["scenes"]))
        assert not failed, f"the background check passes on the {name} model: {detail}"
