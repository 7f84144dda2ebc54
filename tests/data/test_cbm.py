"""The cbm112 concept collection: one params line, Koh et al.'s derivation on a copy, concept image counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import SCHEMA, UNIT_PARAMS, data_settings, merged, unit_params
from ticketlens.cli import run
from ticketlens.config import ConfigError, validate_params
from ticketlens.data import cbm, cub_like
from ticketlens.data.birds.prepare import prepare_cub
from ticketlens.data.birds.records import read_cub
from ticketlens.data.concept_names import expand_concepts
from ticketlens.data.concepts import make_concept_set, make_random_sets
from ticketlens.data.cub_attributes import CBM112_NAMES
from ticketlens.study import ConceptOptions


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 images a class (6 train): enough for the class majority to find every prototype."""
    out = tmp_path_factory.mktemp("cbm") / "archive"
    cub_like.make_cub_like(out, "12", 16, 0)
    return out


def test_cbm112_is_one_params_line_mixable_with_other_concepts() -> None:
    concepts = ["has_wing_color::blue", "cbm112", "texture_dotted", "has_bill_shape::dagger"]
    params = unit_params("cub", dataset={"concepts": concepts})
    expanded = params.datasets["cub"].concepts
    assert len(expanded) == 114 and expanded[:2] == ("has_wing_color::blue", CBM112_NAMES[0])
    assert expanded[-1] == "texture_dotted" and set(CBM112_NAMES) < set(expanded)  # dagger kept once
    assert expand_concepts(["cbm112", "cbm112"]) == CBM112_NAMES


def test_cbm112_is_refused_on_a_dataset_without_cubs_attributes() -> None:
    overrides = {"study": {"datasets": ["synthbirds"]}, "datasets": {"synthbirds": {"concepts": ["cbm112"]}}}
    with pytest.raises(ConfigError, match=r"datasets.synthbirds.concepts': concept collection 'cbm112'"):
        validate_params(merged(UNIT_PARAMS, overrides), SCHEMA)


def test_class_majority_skips_not_visible_and_ties_count_as_present() -> None:
    # class 0: present, absent, not visible -> tie (1:1) -> present; class 1: absent twice -> absent;
    # class 2: only not-visible labels -> 0:0 tie -> present (as Koh et al.'s code counts it)
    attributes = np.array([[1], [0], [0], [0], [0], [0]])
    certainty = np.array([[4], [3], [1], [3], [3], [1]])
    labels = np.array([0, 0, 0, 1, 1, 2])
    held = cbm.class_majority(attributes, certainty, labels, np.ones(6, bool), 3)
    assert held[:, 0].tolist() == [True, False, True]
    # test images never vote
    held = cbm.class_majority(attributes, certainty, labels, np.array([0, 1, 1, 1, 1, 1], bool), 3)
    assert held[0, 0] == np.False_


def test_derivation_on_a_generated_copy_is_the_published_112(archive: Path) -> None:
    comparison = cbm.compare_with_published(read_cub(archive))
    assert comparison.extra == [] and comparison.missing == [] and len(comparison.derived) == 112


def test_differences_are_reported(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = read_cub(archive)
    blue = records.attribute_names.index("has_wing_color::blue")
    dagger = records.attribute_names.index("has_bill_shape::dagger")
    records.attributes[:, blue] = 1  # every class blue-winged: kept, though not published
    records.attributes[:, dagger] = 0  # no dagger bill: published, no longer kept
    lines = cbm.comparison_lines(records, cbm.compare_with_published(records))
    assert lines[1] == "  kept here, not published: 10 has_wing_color::blue"
    assert lines[2] == "  published, not kept here: 2 has_bill_shape::dagger"


def test_data_check_counts_concept_images(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = tmp_path / "counts.csv"
    args = ["data", "check", "--root", str(archive), "--set-size", "150", "--counts-out", str(counts)]
    assert run(args) == 0
    out = capsys.readouterr().out
    assert "keeps 112 attributes: the published 112 exactly" in out
    assert "concept images (train, certainty >= the minimum, part visible): 112 concepts" in out
    table = counts.read_text().splitlines()
    assert table[0] == "concept,attribute_id,images" and len(table) == 113
    fewest = min(table[1:], key=lambda row: int(row.rsplit(",", 1)[1]))
    name, _, n = fewest.split(",")
    assert f"concept {name}: {n} images show it, fewer than set_size 150: its set holds {n}" in out
    assert run(["data", "check", "--root", str(archive), "--concepts", "has_eye_color::iridescent"]) == 0
    # not an attribute of CUB's eye colours: counted 0 is not claimed, the name is skipped
    assert "concept images" not in capsys.readouterr().out


def test_whole_bird_attributes_become_box_crops(archive: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.pt"
    prepare_cub(
        data_settings("cub", root=str(archive / "CUB_200_2011"), image_size=16), data, tmp_path / "m.csv"
    )
    random, calibration = tmp_path / "random.pt", tmp_path / "calibration.pt"
    make_random_sets(data, 2, 1, 5, 0, random, calibration)
    options = ConceptOptions(min_certainty=3, class_majority=False, images="part_crops")
    for concept in ("has_size::small_(5_-_9_in)", "has_wing_color::grey"):
        out = tmp_path / "concept.pt"
        make_concept_set(data, "cub", concept, 5, options, [random, calibration], out)
        import torch

        saved = torch.load(out, weights_only=True)
        assert saved["images"].shape == (5, 3, 16, 16) and saved["images"].dtype == torch.uint8
