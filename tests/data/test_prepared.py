"""The checks every prepared dataset passes before it is written (mnist, synthbirds and cub alike)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import make_toy_data
from ticketlens.data.prepared import TEST, TRAIN, VALIDATION, check_prepared
from ticketlens.errors import UserError

OUT = Path("results/toy/prepared/data.pt")


def _refusal(data) -> str:
    with pytest.raises(UserError) as info:
        check_prepared(data, OUT)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{OUT}: not written: ")
    return message.removeprefix(f"{OUT}: not written: ")


def test_toy_data_passes() -> None:
    check_prepared(make_toy_data(), OUT)


@pytest.mark.parametrize(("split", "name"), [(TRAIN, "train"), (TEST, "test")])
def test_empty_train_or_test_split(split: int, name: str) -> None:
    data = make_toy_data()
    data.split[data.split == split] = VALIDATION
    assert _refusal(data).startswith(f"the {name} split is empty (allowed: at least one {name} image")


def test_validation_needs_one_image_per_class() -> None:
    data = make_toy_data(classes=4)
    data.split[data.indices(VALIDATION)[3:]] = TRAIN
    assert _refusal(data) == (
        "the validation split has 3 images for 4 classes (allowed: at least one image per class, here >= 4)"
    )


@pytest.mark.parametrize("field", ["mean", "std"])
def test_non_finite_statistics(field: str) -> None:
    data = make_toy_data()
    setattr(data, field, [float("nan")])
    assert _refusal(data) == (
        f"the train images' channel {field} is [nan] (allowed: finite numbers; are the train images empty?)"
    )


def test_labels_out_of_range() -> None:
    data = make_toy_data(classes=4)
    data.labels = data.labels.clone()
    data.labels[0] = torch.tensor(7)
    assert _refusal(data) == "labels run 0..7 but there are 4 class names (allowed: 0..3)"
