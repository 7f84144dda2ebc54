"""Synthetic birds: generated in the CUB layout, parsed by the real reader, answers as intended."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import data_settings
from ticketlens.data.birds.check import check_cub
from ticketlens.data.birds.records import read_cub
from ticketlens.data.prepared import TEST, TRAIN, VALIDATION, load_prepared
from ticketlens.data.synthbirds.classes import (
    GROUP,
    PART_ID,
    PART_NAMES,
    class_definitions,
    class_table,
    defining_sizes,
)
from ticketlens.data.synthbirds.folder import MANIFEST, ensure_generated, generation_settings
from ticketlens.data.synthbirds.prepare import prepare_synthbirds
from ticketlens.errors import UserError
from ticketlens.study import DataSettings

SMALL = {
    "n_classes": 4,
    "images_per_class": 10,
    "generate_size": 48,
    "image_size": 24,
    "shortcut_rate": 0.0,
    "generator_seed": 3,
    "validation_fraction": 0.2,
    "crop_to_box": False,
}


def birds(**changes: Any) -> DataSettings:
    """The data settings of a `datasets.synthbirds` section: SMALL with `changes`, the rest from the schema."""
    return data_settings("synthbirds", **{**SMALL, **changes})


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataSettings, Path]:
    base = tmp_path_factory.mktemp("synthbirds")
    config = birds(root=str(base / "raw"))
    out = base / "prepared" / "data.pt"
    prepare_synthbirds(config, out)
    return config, out


def test_class_design() -> None:
    assert [defining_sizes(n)["has_wing_color"] for n in (2, 6, 9)] == [2, 3, 3]
    six = class_definitions(6)
    assert len({tuple(d.items()) for d in six}) == 6  # distinct classes
    assert all(set(d) == {"has_wing_color", "has_breast_pattern"} for d in six)
    assert len({tuple(d.items()) for d in class_definitions(200)}) == 200
    with pytest.raises(UserError, match="n_classes 5000"):
        class_definitions(5000)
    assert class_table(6)[1].split("\t")[1] == "Blue_winged_Solid_breasted_Bird"


def test_reader_parses_generation(small: tuple[DataSettings, Path]) -> None:
    config, _ = small
    root = Path(config.root)
    records = read_cub(root)
    n = SMALL["n_classes"] * SMALL["images_per_class"]
    assert len(records.paths) == n and len(records.class_folders) == SMALL["n_classes"]
    assert list(np.bincount(records.labels)) == [SMALL["images_per_class"]] * SMALL["n_classes"]
    assert records.part_names == list(PART_NAMES)
    assert records.is_train.sum() == SMALL["n_classes"] * 7  # 70% of each class
    assert "images: 40 (28 train, 12 test)" in check_cub(root)
    table = (root / "class_definitions.tsv").read_text().splitlines()
    assert len(table) == SMALL["n_classes"] + 1


def test_every_image_carries_its_class_definition(small: tuple[DataSettings, Path]) -> None:
    _, out = small
    data = load_prepared(out)
    names = data.extras["attribute_names"]
    attributes = data.extras["attributes"]
    for k, definition in enumerate(class_definitions(SMALL["n_classes"])):
        members = data.labels == k
        indices = data.extras["defining_attributes"][k]
        assert [names[a] for a in indices] == [f"{g}::{v}" for g, v in definition.items()]
        assert (attributes[members][:, indices] == 1).all()
        expected_parts = {PART_ID[p] for g in definition for p in GROUP[g].parts}
        assert set(data.extras["defining_parts"][k]) == expected_parts
    # exactly one value per attribute group, and non-defining groups do vary
    crown = [a for a, name in enumerate(names) if name.startswith("has_crown_color::")]
    assert (attributes[:, crown].sum(dim=1) == 1).all()
    assert (attributes[:, crown].sum(dim=0) > 0).sum() >= 3


def test_boxes_parts_and_masks_agree(small: tuple[DataSettings, Path]) -> None:
    _, out = small
    data = load_prepared(out)
    size = SMALL["image_size"]
    masks = data.extras["part_masks"]
    assert masks.shape == (40, size, size) and masks.dtype == torch.uint8 and masks.max() <= len(PART_NAMES)
    boxes, locs = data.extras["boxes"], data.extras["part_locs"]
    for i in range(len(masks)):
        ys, xs = torch.nonzero(masks[i], as_tuple=True)
        x, y, w, h = boxes[i].tolist()
        # nearest-neighbour downsampling moves mask edges by at most one pixel
        assert x - 1 <= xs.min() and xs.max() <= x + w + 1 and y - 1 <= ys.min() and ys.max() <= y + h + 1
        for part in ("breast", "back", "crown"):
            px, py, visible = locs[i, PART_ID[part] - 1].tolist()
            assert visible == 1 and x - 1 <= px <= x + w + 1 and y - 1 <= py <= y + h + 1
            region = torch.nonzero(masks[i] == PART_ID[part]).float()
            if len(region):  # the centroid lies near the part's own pixels
                assert torch.cdist(region[:, [1, 0]] + 0.5, torch.tensor([[px, py]])).min() < 3
        eyes = locs[i, [PART_ID["left eye"] - 1, PART_ID["right eye"] - 1], 2]
        assert eyes.sum() == 1  # side view: one eye visible


def test_prepared_fields(small: tuple[DataSettings, Path]) -> None:
    _, out = small
    data = load_prepared(out)
    assert data.name == "synthbirds" and data.images.shape == (40, 3, 24, 24)
    assert data.extras["shortcut"].dtype == torch.uint8 and data.extras["shortcut"].shape == (40,)
    assert (data.split == TEST).sum() == 12 and (data.split == TRAIN).sum() > 0
    assert (data.extras["certainty"] >= 1).all() and (data.extras["certainty"] <= 4).all()
    meta = (out.parent / "meta.csv").read_text().splitlines()
    assert len(meta) == 41 and meta[0].endswith("attributes,shortcut")


def test_deterministic_and_reused(small: tuple[DataSettings, Path], tmp_path: Path) -> None:
    config, _ = small
    root = Path(config.root)
    settings = generation_settings(config)
    stamp = (root / "images.txt").stat().st_mtime_ns
    assert ensure_generated(root, settings) is False  # same settings: untouched
    assert (root / "images.txt").stat().st_mtime_ns == stamp
    other = tmp_path / "again"
    assert ensure_generated(other, settings) is True
    for name in ("images.txt", "bounding_boxes.txt", "parts/part_locs.txt", "shortcut.txt"):
        assert (other / name).read_text() == (root / name).read_text()
    first = sorted((root / "images").rglob("*.jpg"))[0]
    assert (other / first.relative_to(root)).read_bytes() == first.read_bytes()


def test_regenerates_own_folder_and_refuses_foreign(tmp_path: Path) -> None:
    tiny = birds(n_classes=2, images_per_class=4)
    root = tmp_path / "birds"
    ensure_generated(root, generation_settings(tiny))
    assert ensure_generated(root, generation_settings(dataclasses.replace(tiny, generator_seed=9))) is True
    assert json.loads((root / MANIFEST).read_text())["generator_seed"] == 9
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="refusing to overwrite"):
        ensure_generated(foreign, generation_settings(tiny))
    assert (foreign / "thesis.tex").read_text() == "precious"
    (root / "notes.txt").write_text("mine too")  # a user file inside a generated folder
    with pytest.raises(UserError, match="refusing to overwrite"):
        ensure_generated(root, generation_settings(tiny))


def test_shortcut_rate(tmp_path: Path) -> None:
    config = birds(n_classes=3, images_per_class=20, shortcut_rate=1.0, root=str(tmp_path / "raw"))
    prepare_synthbirds(config, tmp_path / "data.pt")
    data = load_prepared(tmp_path / "data.pt")
    shortcut = data.extras["shortcut"]
    assert (shortcut[data.split != TEST] == 1).all()  # train and validation: background = class
    assert shortcut[data.split == TEST].float().mean() < 0.8  # test: random scene
    names = data.extras["attribute_names"]
    scene = torch.stack(
        [data.extras["attributes"][:, names.index(f"has_background::scene_{s}")] for s in range(3)]
    )
    assert (scene.argmax(dim=0)[shortcut == 1] == data.labels[shortcut == 1]).all()


def test_crop_to_box(small: tuple[DataSettings, Path], tmp_path: Path) -> None:
    config, _ = small
    prepare_synthbirds(dataclasses.replace(config, crop_to_box=True), tmp_path / "data.pt")
    data = load_prepared(tmp_path / "data.pt")
    bird_share = (data.extras["part_masks"] > 0).float().mean()
    assert bird_share > (load_prepared(small[1]).extras["part_masks"] > 0).float().mean()


@pytest.mark.slow
def test_default_demo_is_learnable(tmp_path: Path) -> None:
    """The params default (6 classes x 100, 64 -> 32 px) is learned by a small conv net in seconds."""
    config = birds(
        n_classes=6,
        images_per_class=100,
        generate_size=64,
        image_size=32,
        generator_seed=0,
        validation_fraction=0.1,
        root=str(tmp_path / "raw"),
    )
    prepare_synthbirds(config, tmp_path / "data.pt")
    data = load_prepared(tmp_path / "data.pt")
    torch.manual_seed(0)
    mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    x = (data.float_images() - mean) / std
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(32, 6),
    )  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    train, test = data.indices(TRAIN), data.indices(TEST)
    for _ in range(300):
        batch = train[torch.randint(len(train), (64,))]
        loss = torch.nn.functional.cross_entropy(net(x[batch]), data.labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (net(x[test]).argmax(1) == data.labels[test]).float().mean().item()
    assert accuracy >= 0.85


def test_few_images_still_give_one_validation_image_per_class(tmp_path: Path) -> None:
    # 4 images a class, 3 train: round(0.1 x 3) = 0 used to leave validation empty and refuse
    config = birds(root=str(tmp_path / "raw"), n_classes=2, images_per_class=4, validation_fraction=0.1)
    out = tmp_path / "prepared" / "data.pt"
    prepare_synthbirds(config, out)
    data = load_prepared(out)
    assert sorted(data.labels[data.split == VALIDATION].tolist()) == [0, 1]
