"""TCAV concept sets and random sets: deterministic, disjoint, stable, and clear about bad names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import data_settings, dataset_settings, make_toy_data
from ticketlens.data.attribute_concepts import attribute_parts
from ticketlens.data.concept_names import check_concept_names
from ticketlens.data.concepts import load_image_sets, make_concept_set, make_random_sets
from ticketlens.data.prepared import TRAIN, PreparedData, load_prepared, save_prepared
from ticketlens.data.procedural import STROKES, TEXTURES
from ticketlens.data.synthbirds.prepare import prepare_synthbirds
from ticketlens.errors import UserError
from ticketlens.study import ConceptOptions

BIRDS = {
    "n_classes": 4,
    "images_per_class": 40,
    "generate_size": 48,
    "image_size": 24,
    "shortcut_rate": 0.0,
    "generator_seed": 1,
    "validation_fraction": 0.1,
    "crop_to_box": False,
}


SIZE = 10  # explanations.tcav.set_size


def _options(**options: object) -> ConceptOptions:
    """`datasets.synthbirds.concept_options`: the keys given, the rest from the schema."""
    settings = dataset_settings("synthbirds", concept_options=options).concept_options
    assert settings is not None
    return settings


@pytest.fixture(scope="module")
def birds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Prepared synthbirds and 3 random sets of 10."""
    base = tmp_path_factory.mktemp("concepts")
    data = base / "data.pt"
    prepare_synthbirds(data_settings("synthbirds", **BIRDS, root=str(base / "raw")), data)
    randoms = [base / "random_sets.pt", base / "calibration_sets.pt"]
    make_random_sets(data, 2, 1, 10, 0, *randoms)  # 2 random sets and 1 held-out calibration set
    return data, randoms


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def test_random_sets_disjoint_train_deterministic(birds: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data_path, randoms = birds
    data = load_prepared(data_path)
    pool, calibration = (_load(p)["sets"] for p in randoms)
    sets = pool + calibration
    indices = [s["indices"] for s in sets]
    assert [s["name"] for s in pool] == ["random_0", "random_1"] and [s["name"] for s in calibration] == [
        "random_2"
    ]
    assert len(set(torch.cat(indices).tolist())) == 30  # disjoint, the held-out set too
    assert all((data.split[i] == TRAIN).all() for i in indices)
    assert torch.equal(sets[1]["images"], data.images[indices[1]])
    assert [name for name, _ in load_image_sets(randoms[1])] == ["random_2"]
    again = [tmp_path / "r.pt", tmp_path / "c.pt"]
    make_random_sets(data_path, 2, 1, 10, 0, *again)
    assert [s["indices"].tolist() for p in again for s in _load(p)["sets"]] == [i.tolist() for i in indices]
    with pytest.raises(UserError, match="need 30000 train images"):
        make_random_sets(data_path, 2, 1, 10000, 0, *again)


def _part_pixels(data: PreparedData, index: torch.Tensor, concept: str) -> torch.Tensor:
    """N x H x W: where the attribute's parts are in each source image (mask label k = part k)."""
    labels = torch.tensor([data.extras["part_names"].index(p) + 1 for p in attribute_parts(concept)])
    return torch.isin(data.extras["part_masks"][index].long(), labels)


def test_attribute_concept_is_part_patches_by_default(birds: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data_path, randoms = birds
    data = load_prepared(data_path)
    out = tmp_path / "has_wing_color__blue.pt"
    make_concept_set(data_path, "synthbirds", "has_wing_color::blue", SIZE, _options(), randoms, out)
    concept = _load(out)
    chosen = concept["indices"]
    assert concept["name"] == "has_wing_color::blue" and len(chosen) == 10
    assert "part patches" in concept["source"]
    a = data.extras["attribute_names"].index("has_wing_color::blue")
    assert (data.extras["attributes"][chosen, a] == 1).all() and (data.split[chosen] == TRAIN).all()
    assert (data.extras["certainty"][chosen, a] >= 3).all()
    used = set(torch.cat([s["indices"] for p in randoms for s in _load(p)["sets"]]).tolist())
    assert not used & set(chosen.tolist())  # disjoint from every random set
    wing = _part_pixels(data, chosen, "has_wing_color::blue")[:, None].expand_as(concept["images"])
    source = data.images[chosen]
    assert wing.any(dim=(1, 2, 3)).all()
    assert torch.equal(concept["images"][wing], source[wing])  # the wing, untouched and in place
    outside = (data.extras["part_masks"][chosen] == 0)[:, None].expand_as(source)
    changed = (concept["images"][outside].int() - source[outside].int()).abs() > 3
    assert changed.float().mean() > 0.8  # a fresh scene behind it, not the bird's own background


def test_whole_images_on_request(birds: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data_path, randoms = birds
    data = load_prepared(data_path)
    out = tmp_path / "whole.pt"
    make_concept_set(
        data_path, "synthbirds", "has_wing_color::blue", SIZE, _options(images="whole"), randoms, out
    )
    concept = _load(out)
    assert torch.equal(concept["images"], data.images[concept["indices"]])
    assert "whole of train images" in concept["source"]


def _copied_share(images: torch.Tensor, data: PreparedData) -> float:
    """Share of concept images that are (nearly) a training image: RMS pixel distance below 1 grey level."""
    train = data.images[data.indices(TRAIN)].float().flatten(1)
    distance = torch.cdist(images.float().flatten(1), train) / train.shape[1] ** 0.5
    return float((distance.min(dim=1).values < 1.0).float().mean())


def _other_parts_shown(concept: dict, data: PreparedData) -> float:
    """Share of the source birds' pixels OUTSIDE the attribute's parts (the rest of the bird, which carries
    the class's other defining attributes) that the concept images still show, unchanged, in place."""
    index = concept["indices"]
    bird = data.extras["part_masks"][index] > 0
    other = (bird & ~_part_pixels(data, index, concept["name"]))[:, None].expand_as(concept["images"])
    same = (concept["images"].int() - data.images[index].int()).abs() <= 3
    return float(same[other].float().mean())


def test_no_concept_set_is_its_classes_images(birds: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """Every part attribute the data can build: no concept image is a training image (whole images of
    blue-winged birds are exactly the blue-winged classes' images), and none shows the rest of the bird."""
    data_path, randoms = birds
    data = load_prepared(data_path)
    present = data.extras["attributes"][data.split == TRAIN].sum(dim=0) >= 2
    names = [n for n, p in zip(data.extras["attribute_names"], present.tolist(), strict=True) if p]
    built = 0
    for name in names:
        if not attribute_parts(name):
            continue  # has_background::scene_k has no part (refused, below)
        out = tmp_path / f"{name.replace('::', '__')}.pt"
        make_concept_set(data_path, "synthbirds", name, SIZE, _options(), randoms, out)
        concept = _load(out)
        assert _copied_share(concept["images"], data) == 0.0, name
        assert _other_parts_shown(concept, data) < 0.05, name
        built += 1
    assert built >= 20  # wing, breast, crown, tail, bill, back, eye and leg values
    with pytest.raises(UserError, match="part_patches needs an attribute of a bird part"):
        make_concept_set(data_path, "synthbirds", "has_background::scene_0", SIZE, _options(), randoms, out)


def test_part_patches_need_part_masks(birds: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data_path, randoms = birds
    data = load_prepared(data_path)
    del data.extras["part_masks"]  # as CUB: part locations, no per-pixel masks
    cub_like = tmp_path / "data.pt"
    save_prepared(data, cub_like)
    with pytest.raises(UserError, match="part_patches needs per-pixel part masks.*use images: part_crops"):
        make_concept_set(
            cub_like, "synthbirds", "has_wing_color::blue", SIZE, _options(), randoms, tmp_path / "x.pt"
        )


def test_deterministic_and_stable_when_a_concept_is_added(
    birds: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    data_path, randoms = birds
    names = ["has_breast_pattern::striped", "texture_dotted"]
    for name in names:
        make_concept_set(data_path, "synthbirds", name, SIZE, _options(), randoms, tmp_path / f"a_{name}.pt")
    # a second study with one more concept, built first
    for name in ["has_wing_color::red", *reversed(names)]:
        make_concept_set(data_path, "synthbirds", name, SIZE, _options(), randoms, tmp_path / f"b_{name}.pt")
    for name in names:
        first, second = _load(tmp_path / f"a_{name}.pt"), _load(tmp_path / f"b_{name}.pt")
        assert torch.equal(first["images"], second["images"]) and torch.equal(
            first["indices"], second["indices"]
        )


def test_class_majority_and_part_crops(birds: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data_path, randoms = birds
    data = load_prepared(data_path)
    out = tmp_path / "crops.pt"
    options = _options(class_majority=True, images="part_crops")
    make_concept_set(data_path, "synthbirds", "has_wing_color::blue", SIZE, options, randoms, out)
    concept = _load(out)
    assert concept["images"].shape == (10, 3, 24, 24) and "part crops" in concept["source"]
    assert "majority" in concept["source"]
    assert not torch.equal(concept["images"], data.images[concept["indices"]])  # cropped, not whole
    assert attribute_parts("has_wing_color::blue") == ("left wing", "right wing")
    assert attribute_parts("has_upper_tail_color::grey") == ("tail",)
    with pytest.raises(UserError, match="majority vote"):  # crown colour is random: no class holds it
        make_concept_set(
            data_path,
            "synthbirds",
            "has_crown_color::white",
            SIZE,
            _options(class_majority=True),
            randoms,
            out,
        )
    with pytest.raises(UserError, match="part_crops needs"):
        make_concept_set(
            data_path,
            "synthbirds",
            "has_background::scene_0",
            SIZE,
            _options(images="part_crops"),
            randoms,
            out,
        )


def test_textures_and_strokes(birds: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data_path, randoms = birds
    for name in TEXTURES:
        make_concept_set(data_path, "synthbirds", name, 7, _options(), randoms, tmp_path / "t.pt")
        texture = _load(tmp_path / "t.pt")
        assert texture["images"].shape == (7, 3, 24, 24) and texture["indices"].numel() == 0
        assert texture["images"].float().std() > 30  # a real two-tone pattern
    mnist = tmp_path / "mnist.pt"
    save_prepared(make_toy_data(n=40, size=28, channels=1), mnist)
    for name in STROKES:
        make_concept_set(mnist, "mnist", name, 6, None, [], tmp_path / "s.pt")
        strokes = _load(tmp_path / "s.pt")["images"]
        assert strokes.shape == (6, 1, 28, 28) and strokes.dtype == torch.uint8
        ink = (strokes > 128).float().mean(dim=(1, 2, 3))
        assert (ink > 0.02).all() and (ink < 0.35).all()  # pen strokes on black
        assert (strokes[:, :, 0, :].float().mean() < 10) and strokes.max() > 200


def test_unknown_concepts(birds: tuple[Path, list[Path]], tmp_path: Path) -> None:
    data_path, randoms = birds
    out = tmp_path / "x.pt"
    with pytest.raises(UserError, match=r"unknown concept 'has_wing_color::plaid'.*has_wing_color::blue"):
        make_concept_set(data_path, "synthbirds", "has_wing_color::plaid", SIZE, _options(), randoms, out)
    with pytest.raises(UserError, match="unknown concept 'texture_paisley'"):
        make_concept_set(data_path, "synthbirds", "texture_paisley", SIZE, _options(), randoms, out)
    with pytest.raises(UserError, match="unknown concept 'stroke_loop' for dataset synthbirds"):
        make_concept_set(data_path, "synthbirds", "stroke_loop", SIZE, _options(), randoms, out)
    with pytest.raises(UserError, match="only 0 train images"):  # exists, but never drawn with 4 classes
        make_concept_set(data_path, "synthbirds", "has_wing_color::purple", SIZE, _options(), randoms, out)
    with pytest.raises(UserError, match="has no attributes"):  # attribute concepts need concept_options
        make_concept_set(data_path, "synthbirds", "has_wing_color::blue", SIZE, None, randoms, out)
    assert not out.exists()
    with pytest.raises(UserError, match="unknown concept 'random_0'"):
        check_concept_names("mnist", ["random_0"])


def test_cli_concept_exit_code(
    birds: tuple[Path, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ticketlens.cli import run

    data_path, randoms = birds
    argv = ["make-concept-set", "--data", str(data_path), "--dataset", "synthbirds"]
    argv += ["--concept", "has_wing_color::plaid", "--size", str(SIZE), "--options", _options().to_json()]
    assert run([*argv, "--random", *map(str, randoms), "--out", str(tmp_path / "x.pt")]) == 2
    assert "unknown concept 'has_wing_color::plaid'" in capsys.readouterr().err


def test_check_concept_names_needs_no_torch() -> None:
    code = "import sys, ticketlens.data.concept_names as c; c.check_concept_names('mnist', ['stroke_loop']); "
    code += "sys.exit('torch' in sys.modules or 'numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_texture_pattern_is_seeded() -> None:
    from ticketlens.data.procedural import texture_images

    first = texture_images("zigzag", 3, 16, 1, np.random.default_rng(5))
    assert np.array_equal(first, texture_images("zigzag", 3, 16, 1, np.random.default_rng(5)))
