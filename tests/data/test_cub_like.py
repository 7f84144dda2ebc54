"""The CUB-shaped generator: CUB's real shape and quirks, read back by the CUB reader, known answers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import data_settings
from ticketlens.cli import run
from ticketlens.data import cub_like
from ticketlens.data.birds.check import check_cub
from ticketlens.data.birds.prepare import prepare_cub
from ticketlens.data.birds.records import read_cub
from ticketlens.data.cub_attributes import ATTRIBUTE_ID, ATTRIBUTE_NAMES, CBM112_IDS, CBM112_NAMES, GROUPS
from ticketlens.data.prepared import TRAIN, VALIDATION, load_prepared

TSV = Path(__file__).parent / "cub_cbm112.tsv"  # shared/reference/cub_cbm112.tsv, as published


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cub_like") / "archive"
    assert (
        run(["data", "make-cub-like", "--out", str(out), "--images-per-class", "3", "--image-size", "24"])
        == 0
    )
    return out


def test_vocabulary_is_cubs_and_cbm112_matches_the_published_list() -> None:
    assert len(GROUPS) == 28 and len(ATTRIBUTE_NAMES) == 312 == len(set(ATTRIBUTE_NAMES))
    rows = [line.split("\t") for line in TSV.read_text().splitlines() if not line.startswith("#")][1:]
    assert [(int(a), name) for a, name in rows] == list(zip(CBM112_IDS, CBM112_NAMES, strict=True))
    assert ATTRIBUTE_NAMES[0] == "has_bill_shape::curved_(up_or_down)"
    assert ATTRIBUTE_NAMES[-1] == "has_wing_pattern::multi-colored"


def test_class_design_holds_the_known_answers() -> None:
    definitions = cub_like.class_definitions()
    assert len({tuple(d.items()) for d in definitions}) == cub_like.N_CLASSES  # 200 distinct classes
    held = cub_like.held_by_classes(cub_like.class_prototypes(definitions))
    # Koh et al.'s filter on the class-level truth gives exactly the 112, and it is not vacuous:
    # some attributes are held by 1-9 classes and must be dropped by it
    assert {name for name, n in held.items() if n >= 10} == set(CBM112_NAMES)
    assert any(0 < n < 10 for n in held.values())
    assert held["has_wing_color::blue"] == 6  # the default CUB concept: 6 blue-winged classes


def test_reader_and_data_check_accept_it(archive: Path) -> None:
    root = archive / "CUB_200_2011"
    records = read_cub(root)
    assert len(records.paths) == 600 and len(records.class_folders) == 200
    assert len(records.attribute_names) == 312 and len(records.part_names) == 15
    assert records.attributes_file == archive / "attributes.txt"  # the archive's place, above the tree
    assert not (root / "attributes.txt").exists()
    assert records.class_attributes is not None and records.class_attributes.shape == (200, 312)
    summary = check_cub(archive)  # the archive's top level is accepted too
    assert "images: 600 (400 train, 200 test)" in summary and "classes: 200" in summary


def test_quirks_are_present(archive: Path) -> None:
    root = archive / "CUB_200_2011"
    records = read_cub(root)
    modes, sizes = Counter(), set()
    for rel in records.paths:
        with Image.open(root / "images" / rel) as image:
            modes[image.mode] += 1
            sizes.add(image.size)
    assert modes["L"] >= 1 and modes["CMYK"] >= 1 and modes["RGB"] > 500
    assert len(sizes) > 20 and all(w >= h for w, h in sizes)  # landscape, of varying sizes
    lines = (root / "attributes" / "image_attribute_labels.txt").read_text().splitlines()
    assert len(lines) == 600 * 312 and any(len(line.split()) > 5 for line in lines)  # extra-field lines
    assert (records.part_locs[:, :, 2] == 0).any()  # invisible parts
    assert "0.0 0.0 0" in (root / "parts" / "part_locs.txt").read_text()
    assert (records.certainty == 1).any()  # "not visible" labels
    assert set(np.unique(records.certainty)) == {1, 2, 3, 4}


def test_labels_follow_the_class_definitions(archive: Path) -> None:
    records = read_cub(archive)
    definitions = cub_like.class_definitions()
    for k, definition in enumerate(definitions):
        rows = records.labels == k
        for group, value in definition.items():  # defining values: every image of the class, no other
            assert records.attributes[rows, ATTRIBUTE_ID[f"{group}::{value}"] - 1].all()
    blue = ATTRIBUTE_ID["has_wing_color::blue"] - 1
    blue_classes = {k for k, d in enumerate(definitions) if d["has_wing_color"] == "blue"}
    assert set(np.unique(records.labels[records.attributes[:, blue] == 1]).tolist()) == blue_classes
    # the continuous table is the per-class percentage of images showing each attribute
    expected = np.stack([records.attributes[records.labels == k].mean(axis=0) * 100 for k in range(200)])
    np.testing.assert_allclose(records.class_attributes, expected, atol=1e-4)
    table = (archive / "class_definitions.tsv").read_text().splitlines()
    assert len(table) == 201 and table[0].startswith("class_id\tclass_name\tdefining_attributes")


def test_prepare_reads_it_with_one_validation_image_per_class(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "data.pt"
    prepare_cub(
        data_settings("cub", root=str(archive / "CUB_200_2011"), image_size=16), out, tmp_path / "m.csv"
    )
    data = load_prepared(out)
    assert data.images.shape == (600, 3, 16, 16) and data.num_classes == 200
    assert int((data.split == VALIDATION).sum()) == 200 and int((data.split == TRAIN).sum()) == 200


def test_same_settings_keep_other_settings_replace_foreign_refused(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((archive / cub_like.MANIFEST).read_text())
    assert manifest["images_per_class"] == 3 and manifest["image_size"] == 24
    stamp = (archive / "attributes.txt").stat().st_mtime_ns
    cub_like.make_cub_like(archive, "3", 24, 0)
    assert "kept" in capsys.readouterr().out and (archive / "attributes.txt").stat().st_mtime_ns == stamp
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    args = ["data", "make-cub-like", "--out", str(foreign), "--images-per-class", "2", "--image-size", "16"]
    assert run(args) == 2
    assert "did not write; refusing to overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert run(["data", "make-cub-like", "--out", str(tmp_path / "x"), "--images-per-class", "1"]) == 2
    assert "need at least 2" in capsys.readouterr().err


def test_real_count_is_cubs() -> None:
    assert sum(cub_like.class_counts("cub")) == 11_788
