"""The CUB-200-2011 reader on a hand-made tiny copy (tests/data/tiny_cub) with every quirk and failure."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import data_settings
from ticketlens.cli import run
from ticketlens.data.birds.check import check_cub
from ticketlens.data.birds.prepare import prepare_cub
from ticketlens.data.birds.records import read_cub
from ticketlens.data.prepared import TEST, TRAIN, VALIDATION, load_prepared
from ticketlens.errors import UserError

TINY = Path(__file__).parent / "tiny_cub"


@pytest.fixture
def cub(tmp_path: Path) -> Path:
    """A writable copy: tiny_cub/CUB_200_2011 with attributes.txt in the parent, as in the archive."""
    shutil.copytree(TINY, tmp_path / "tiny_cub")
    return tmp_path / "tiny_cub" / "CUB_200_2011"


def _edit_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_reads_every_file_with_quirks(cub: Path) -> None:
    records = read_cub(cub)
    assert list(records.image_ids) == [1, 2, 3, 4, 5, 6, 7, 8, 9]  # sorted by id although images.txt is not
    assert records.paths[4] == "003.Sooty Albatross/Sooty Albatross 0001.jpg"  # spaces kept
    assert records.class_names == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert list(records.labels) == [0, 0, 1, 1, 2, 2, 0, 1, 2]  # 1-based class ids -> 0-based labels
    assert list(records.is_train) == [True, False, True, False, True, False, True, True, True]
    assert records.part_names[6] == "left eye" and len(records.part_names) == 15
    assert records.attributes_file == cub.parent / "attributes.txt"
    assert records.attribute_names[0] == "has_bill_shape::hooked_seabird"
    assert records.attributes.shape == (9, 6) and records.certainty.shape == (9, 6)
    assert list(np.flatnonzero(records.attributes[1])) == [0, 2, 4, 5]  # image 2 has 1, 3, 5, 6
    assert records.certainty[1, 1] == 2  # lines with extra fields still parsed
    assert records.certainty_names == ["not visible", "guessing", "probably", "definitely"]
    assert tuple(records.part_locs[0, 6]) == (0.0, 0.0, 0.0)  # invisible part
    np.testing.assert_allclose(records.boxes[3], [5.5, 5.5, 20.0, 15.0])
    assert records.class_attributes is not None and records.class_attributes.shape == (3, 6)


def test_attributes_inside_the_folder_and_archive_top_level(cub: Path) -> None:
    shutil.move(cub.parent / "attributes.txt", cub / "attributes.txt")
    assert read_cub(cub).attributes_file == cub / "attributes.txt"
    assert read_cub(cub.parent).root == cub  # the folder holding CUB_200_2011/ works too


def test_check_summary(cub: Path) -> None:
    summary = check_cub(cub)
    assert "images: 9 (6 train, 3 test)" in summary
    assert "classes: 3" in summary and "attributes: 6" in summary and "parts: 15" in summary


def test_prepare_converts_grayscale_and_cmyk_and_maps_coordinates(cub: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared" / "data.pt"
    prepare_cub(
        data_settings("cub", root=str(cub), image_size=20, crop_to_box=False, validation_fraction=0.5), out
    )
    data = load_prepared(out)
    assert data.name == "cub" and data.images.shape == (9, 3, 20, 20)
    assert [int((data.split == s).sum()) for s in (TRAIN, VALIDATION, TEST)] == [3, 3, 3]
    # image 4 (CMYK, 40 x 30) box (5.5, 5.5, 20, 15) -> scaled by 20/40 and 20/30
    np.testing.assert_allclose(data.extras["boxes"][3].numpy(), [2.75, 20 / 30 * 5.5, 10.0, 10.0], rtol=1e-5)
    # the rectangle drawn inside the box is coloured, the background is not: RGB content survived
    x, y = 7, 8  # inside image 4's box in prepared pixels
    assert data.images[3, :, y, x].float().std() > 20  # CMYK converted to a real colour
    assert data.images[1, 0, 10, 10] == data.images[1, 1, 10, 10] == data.images[1, 2, 10, 10]  # grayscale
    assert data.extras["certainty"].dtype.is_floating_point is False
    assert data.extras["part_locs"].shape == (9, 15, 3) and data.extras["part_locs"][:, 6, 2].sum() == 0
    meta = (out.parent / "meta.csv").read_text().splitlines()
    assert len(meta) == 10 and meta[0].startswith("index,image_id,path,split,label,class_name,box_x")


def test_crop_to_box_moves_parts_into_crop(cub: Path, tmp_path: Path) -> None:
    out = tmp_path / "data.pt"
    prepare_cub(
        data_settings("cub", root=str(cub), image_size=16, crop_to_box=True, validation_fraction=0.5), out
    )
    data = load_prepared(out)
    boxes = data.extras["boxes"]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 16 + 1e-4).all()
    assert (boxes[:, 2] > 10).all()  # the box fills most of the crop (10% margin each side)
    visible = data.extras["part_locs"][..., 2] > 0
    locs = data.extras["part_locs"][visible]
    assert ((locs[:, :2] >= 0) & (locs[:, :2] <= 16)).all()


@pytest.mark.parametrize(
    ("relative", "lineno", "text", "expected"),
    [
        ("images.txt", 2, "one two", "images.txt: line 2: expected '<image_id> <class_folder/file.jpg>'"),
        ("image_class_labels.txt", 3, "2", "image_class_labels.txt: line 3: expected"),
        ("bounding_boxes.txt", 4, "4 1.0 2.0 x 4.0", "bounding_boxes.txt: line 4: expected"),
        ("train_test_split.txt", 1, "99 1", "train_test_split.txt: line 1: unknown image id 99"),
        ("parts/part_locs.txt", 5, "1 5 3.0 4.0 7", "part_locs.txt: line 5: part id must be"),
        ("attributes/image_attribute_labels.txt", 8, "2 2 1", "image_attribute_labels.txt: line 8: expected"),
        (
            "attributes/image_attribute_labels.txt",
            9,
            "2 3 1 9 0.0",
            "image_attribute_labels.txt: line 9: certainty",
        ),
        ("classes.txt", 2, "5 002.Laysan_Albatross", "classes.txt: line 2: expected class id 2"),
        ("attributes/class_attribute_labels_continuous.txt", 2, "1 2", "continuous.txt: line 2: expected 6"),
    ],
)
def test_malformed_line_names_file_and_line(
    cub: Path, relative: str, lineno: int, text: str, expected: str
) -> None:
    _edit_line(cub / relative, lineno, text)
    with pytest.raises(UserError, match=None) as info:
        check_cub(cub)
    message = str(info.value)
    assert expected in message and "\n" not in message


@pytest.mark.parametrize(
    "relative",
    [
        "images.txt",
        "classes.txt",
        "bounding_boxes.txt",
        "parts/parts.txt",
        "attributes/image_attribute_labels.txt",
    ],
)
def test_missing_file_is_named(cub: Path, relative: str) -> None:
    (cub / relative).unlink()
    with pytest.raises(UserError, match=f"{relative}: missing"):
        check_cub(cub)


def test_missing_attributes_txt_and_image(cub: Path) -> None:
    (cub.parent / "attributes.txt").unlink()
    with pytest.raises(UserError, match="attributes.txt: missing"):
        read_cub(cub)
    shutil.copy(TINY / "attributes.txt", cub.parent / "attributes.txt")
    (cub / "images" / "003.Sooty Albatross" / "Sooty Albatross 0002.jpg").unlink()
    with pytest.raises(
        UserError, match=r"images.txt: line 4: image file .*Sooty Albatross 0002.jpg not found"
    ):
        check_cub(cub)


def test_truncated_attribute_labels(cub: Path) -> None:
    path = cub / "attributes" / "image_attribute_labels.txt"
    path.write_text("\n".join(path.read_text().splitlines()[:-3]) + "\n")
    with pytest.raises(UserError, match="no line for image id 9 attribute 4"):
        read_cub(cub)


def test_cli_data_check(cub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["data", "check", "--dataset", "cub", "--root", str(cub)]) == 0
    assert "images: 9" in capsys.readouterr().out
    (cub / "classes.txt").unlink()
    assert run(["data", "check", "--dataset", "cub", "--root", str(cub)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "classes.txt: missing" in err and "Traceback" not in err
    assert run(["data", "check", "--root", str(cub / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


# ------------------------------------------------------------------- images, boxes and splits are checked

LAYSAN_1 = "002.Laysan_Albatross/Laysan_Albatross_0001.jpg"  # image 3, images.txt line 1
SOOTY_1 = "003.Sooty Albatross/Sooty Albatross 0001.jpg"  # image 5, images.txt line 6


def _prepare(cub: Path, out: Path, **config: object) -> None:
    settings = {"root": str(cub), "image_size": 16, "validation_fraction": 0.5, **config}
    prepare_cub(data_settings("cub", **settings), out)


def _one_line(info: pytest.ExceptionInfo[UserError]) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


def test_check_decodes_every_image(cub: Path, tmp_path: Path) -> None:
    (cub / "images" / LAYSAN_1).write_bytes(b"")
    with pytest.raises(UserError) as info:
        check_cub(cub)
    assert _one_line(info) == (
        f"{cub / 'images.txt'}: line 1: image file images/{LAYSAN_1} is empty (0 bytes) "
        "(allowed: a complete image file that PIL can decode)"
    )
    shutil.copy(TINY / "CUB_200_2011" / "images" / LAYSAN_1, cub / "images" / LAYSAN_1)
    sooty = cub / "images" / SOOTY_1
    sooty.write_bytes(sooty.read_bytes()[:-50])  # header intact, scan data cut short
    with pytest.raises(UserError) as info:
        check_cub(cub)
    message = _one_line(info)
    assert message.startswith(
        f"{cub / 'images.txt'}: line 6: image file images/{SOOTY_1} cannot be decoded ("
    )
    assert "truncated" in message and "allowed: a complete image file" in message
    with pytest.raises(UserError, match=r"images.txt: line 6: image file .* cannot be decoded"):
        _prepare(cub, tmp_path / "data.pt")  # prepare names the same line
    assert not (tmp_path / "data.pt").exists() and not (tmp_path / "meta.csv").exists()


def test_check_shows_progress_on_many_images(
    cub: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    check_cub(cub)
    assert capsys.readouterr().err == ""  # a tiny copy is checked quietly
    monkeypatch.setattr("ticketlens.data.birds.images.PROGRESS_MIN_IMAGES", 5)
    check_cub(cub)
    err = capsys.readouterr().err
    assert "decoding images" in err and "9/9" in err


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("4 100.0 100.0 10.0 10.0", "x 100, y 100, width 10, height 10"),  # wholly outside
        ("4 35.0 5.5 20.0 15.0", "x 35, y 5.5, width 20, height 15"),  # right edge at 55 > 40
        ("4 -3.0 5.5 20.0 15.0", "x -3, y 5.5, width 20, height 15"),
        ("4 5.5 5.5 0.0 15.0", "x 5.5, y 5.5, width 0, height 15"),  # zero area
    ],
)
def test_box_outside_the_image_is_refused(cub: Path, tmp_path: Path, line: str, shown: str) -> None:
    _edit_line(cub / "bounding_boxes.txt", 4, line)  # image 4 is 40 x 30 pixels
    expected = (
        f"{cub / 'bounding_boxes.txt'}: line 4: box {shown} is not inside image "
        "images/002.Laysan_Albatross/Laysan_Albatross_0002.jpg of 40 x 30 pixels "
        "(allowed: width > 0, height > 0, 0 <= x, x + width <= 40, 0 <= y, y + height <= 30, 1 pixel tolerance)"
    )
    with pytest.raises(UserError) as info:
        check_cub(cub)
    assert _one_line(info) == expected
    for crop in (False, True):
        with pytest.raises(UserError) as info:
            _prepare(cub, tmp_path / "data.pt", crop_to_box=crop)
        assert _one_line(info) == expected
    assert not (tmp_path / "data.pt").exists()


def test_box_within_one_pixel_of_the_edge_is_kept(cub: Path, tmp_path: Path) -> None:
    _edit_line(cub / "bounding_boxes.txt", 4, "4 0.0 1.0 41.0 29.5")  # 1-based corner coordinates
    check_cub(cub)
    _prepare(cub, tmp_path / "data.pt")
    assert load_prepared(tmp_path / "data.pt").extras["boxes"][3, 2] == pytest.approx(16.0)


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (
            "0",
            "no image is marked 1 (train): the train split would be empty (allowed: at least one 1 and one 0)",
        ),
        (
            "1",
            "no image is marked 0 (test): the test split would be empty (allowed: at least one 1 and one 0)",
        ),
    ],
)
def test_empty_train_or_test_split_is_refused(cub: Path, tmp_path: Path, flag: str, expected: str) -> None:
    path = cub / "train_test_split.txt"
    path.write_text("".join(f"{image_id} {flag}\n" for image_id in range(1, 10)))
    for action in (lambda: check_cub(cub), lambda: _prepare(cub, tmp_path / "data.pt")):
        with pytest.raises(UserError) as info:
            action()
        assert _one_line(info) == f"{path}: {expected}"
    assert not (tmp_path / "data.pt").exists() and not (tmp_path / "meta.csv").exists()


def test_validation_takes_one_image_of_a_small_class(cub: Path, tmp_path: Path) -> None:
    # 2 training images per class: round(0.1 x 2) = 0 used to leave validation empty and refuse
    out = tmp_path / "prepared" / "data.pt"
    _prepare(cub, out, validation_fraction=0.1)
    data = load_prepared(out)
    val_labels = data.labels[data.split == VALIDATION]
    assert sorted(val_labels.tolist()) == [0, 1, 2]
    assert all(int(((data.split == TRAIN) & (data.labels == k)).sum()) == 1 for k in range(3))


def test_validation_split_too_small_is_refused(cub: Path, tmp_path: Path) -> None:
    # class 1's train images are 1 and 7: with image 1 moved to test, class 1 keeps one train image
    # and can give none to validation
    lines = (cub / "train_test_split.txt").read_text().splitlines()
    (cub / "train_test_split.txt").write_text(
        "\n".join(f"{line.split()[0]} 0" if line.split()[0] == "1" else line for line in lines) + "\n"
    )
    out = tmp_path / "prepared" / "data.pt"
    with pytest.raises(UserError) as info:
        _prepare(cub, out, validation_fraction=0.1)
    assert _one_line(info) == (
        f"{out}: not written: the validation split has 2 images for 3 classes (allowed: at least one image "
        "per class, here >= 3; raise datasets.cub.validation_fraction or add images)"
    )
    assert not out.exists() and not (out.parent / "meta.csv").exists()


def test_cli_prepare_refuses_in_one_line(
    cub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cub / "train_test_split.txt").write_text("".join(f"{i} 0\n" for i in range(1, 10)))
    settings = data_settings("cub", root=str(cub), image_size=16).to_json()
    out = tmp_path / "data.pt"
    args = ["prepare-dataset", "--dataset", "cub", "--settings", settings, "--out", str(out)]
    assert run([*args, "--meta", str(out.parent / "meta.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ticketlens prepare-dataset: error: ") and "train split would be empty" in err
    assert len(err.splitlines()) == 1 and not out.exists()
