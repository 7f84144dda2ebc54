"""Training options for real bird studies: an explicit device, and
ImageNet initialisation (rewinding to the pretrained weights, BatchNorm and biases never pruned)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
import torchvision

from helpers import TOY, TOY_PRUNING, explain_into, into, make_toy_data
from ticketlens.data.prepared import save_prepared
from ticketlens.errors import UserError
from ticketlens.fileio import file_sha256
from ticketlens.lottery import pretrained
from ticketlens.lottery.rounds import load_checkpoint, train_ticket
from ticketlens.study import TICKET_FILES, Ticket

CHECKPOINT = TICKET_FILES.checkpoint


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_whole_path_with_device_cpu_given_writes_the_default_bytes(tmp_path, toy_data_path):
    from helpers import tcav_settings
    from ticketlens.data.concepts import make_random_sets
    from ticketlens.explanations.tcav import tcav_calibration

    randoms, calibration = tmp_path / "random_sets.pt", tmp_path / "calibration_sets.pt"
    make_random_sets(toy_data_path, 4, 1, 6, 0, randoms, calibration)
    tcav = tcav_settings(n_random_sets=4, set_size=6, n_counterparts=2, n_null_draws=19, inputs_per_class=3,
                         n_calibration_sets=1)  # fmt: skip
    outputs = {}
    for device in ("auto", "cpu"):
        folder = tmp_path / device
        train_ticket(Ticket("toy", 0, "ticket", 0), toy_data_path, TOY.model, TOY.model_width, TOY.training,
                     TOY_PRUNING, *into(folder), device=device)  # fmt: skip
        explain_into(folder / CHECKPOINT, toy_data_path, 2, folder, device=device)  # type: ignore[arg-type]
        tcav_calibration(folder / CHECKPOINT, toy_data_path, randoms, calibration, tcav, folder / "calibration.csv",
                         device=device)  # fmt: skip
        outputs[device] = {
            name: _sha(folder / name)
            for name in (
                "checkpoint.pt",
                "saliency.npz",
                "saliency.csv",
                "consistency.csv",
                "calibration.csv",
            )
        }
    assert outputs["auto"] == outputs["cpu"]


@pytest.fixture
def fake_imagenet(tmp_path, monkeypatch):
    """A torchvision-shaped ResNet-18 state dict (random weights) registered as the ImageNet file."""
    torch.manual_seed(11)
    state = torchvision.models.resnet18(weights=None).state_dict()
    folder = tmp_path / "weights"
    folder.mkdir()
    path = folder / "resnet18-fake.pth"
    torch.save(state, path)
    entry = pretrained.PretrainedWeights("resnet18", path.name, "file://fake", file_sha256(path))
    monkeypatch.setitem(pretrained.REGISTERED, "resnet18", entry)
    return folder, state


@pytest.mark.slow
def test_imagenet_rounds_rewind_to_the_pretrained_weights_and_never_prune_batchnorm_or_biases(
    tmp_path, fake_imagenet
):
    folder, state = fake_imagenet
    data = tmp_path / "data.pt"
    save_prepared(make_toy_data(n=120, classes=3, size=32, channels=3), data)
    training = dataclasses.replace(TOY.training, model_init="imagenet", weights_file=str(folder),
                                   iterations=2, eval_every=2, batch_size=8)  # fmt: skip

    def train(branch, r, **links):
        out = tmp_path / f"{branch}{r}"
        train_ticket(
            Ticket("toy", 0, branch, r), data, "resnet18", 1.0, training, TOY_PRUNING, *into(out), **links
        )
        return load_checkpoint(out / CHECKPOINT)

    dense = train("ticket", 0)
    assert dense["model"]["model_init"] == "imagenet"
    assert dense["model"]["mean"] == list(pretrained.IMAGENET_MEAN)
    for key, value in state.items():  # rewinding to iteration 0 is rewinding to the pretrained weights
        if not key.startswith("fc."):
            assert torch.equal(dense["rewind_state"][f"features.{key}"], value), key
    ticket = train("ticket", 1, previous=tmp_path / "ticket0" / CHECKPOINT)
    assert all(key.endswith(".weight") for key in ticket["masks"])
    pruned_modules = {key.removesuffix(".weight") for key in ticket["masks"]}
    assert not any("bn" in name or "downsample.1" in name for name in pruned_modules)
    assert "features.conv1" in pruned_modules and "classifier.out" in pruned_modules
    for key, value in ticket["state_dict"].items():  # BatchNorm and biases: trained, never zeroed
        if "bn" in key and key.endswith(("weight", "bias")):
            assert bool((value != 0).all()), key
    assert torch.equal(ticket["rewind_state"]["features.conv1.weight"], state["conv1.weight"])
    reinit = train("reinit", 1, ticket_checkpoint=tmp_path / "ticket1" / CHECKPOINT)
    assert not torch.equal(reinit["rewind_state"]["features.conv1.weight"], state["conv1.weight"])


def test_a_missing_weights_file_stops_the_round_in_one_line(tmp_path, toy_data_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = tmp_path / "rgb.pt"
    save_prepared(make_toy_data(n=40, classes=2, size=32, channels=3), data)
    training = dataclasses.replace(TOY.training, model_init="imagenet")
    with pytest.raises(UserError, match=r"resnet18-f37072fd.pth .*not found: put torchvision's") as err:
        train_ticket(
            Ticket("toy", 0, "ticket", 0), data, "resnet18", 1.0, training, TOY_PRUNING, tmp_path / "t"
        )
    assert "\n" not in str(err.value)
    assert not (tmp_path / "t" / CHECKPOINT).exists()
