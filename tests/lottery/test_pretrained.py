"""ImageNet initialisation offline: a verified local file or torchvision's cache, refused otherwise."""

from __future__ import annotations

import pytest
import torch
import torchvision

from ticketlens.errors import UserError
from ticketlens.fileio import file_sha256
from ticketlens.lottery import pretrained


def test_torchvision_names_the_file_and_its_hash():
    weights = pretrained.published_weights("resnet18")
    assert weights.file_name == "resnet18-f37072fd.pth" and weights.sha256 == "f37072fd"
    assert pretrained.published_weights("resnet50").file_name == "resnet50-0676ba61.pth"
    with pytest.raises(UserError, match="allowed: resnet18, resnet50"):
        pretrained.published_weights("conv4")


def test_missing_file_is_one_line_naming_the_file_and_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError) as err:
        pretrained.verified_state(pretrained.published_weights("resnet18"), None)
    message = str(err.value)
    assert "\n" not in message
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


@pytest.fixture
def fake_resnet18(tmp_path, monkeypatch):
    """A torchvision-shaped ResNet-18 state dict with random weights, registered with its own hash."""
    torch.manual_seed(11)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18-fake.pth"
    torch.save(state, path)
    entry = pretrained.PretrainedWeights("resnet18", path.name, "file://fake", file_sha256(path))
    monkeypatch.setitem(pretrained.REGISTERED, "resnet18", entry)
    return path, state


def test_wrong_hash_is_refused_before_loading(fake_resnet18, monkeypatch):
    path, _ = fake_resnet18
    entry = pretrained.REGISTERED["resnet18"]
    monkeypatch.setitem(pretrained.REGISTERED, "resnet18", pretrained.PretrainedWeights(
        entry.model, entry.file_name, entry.url, "0" * 64))  # fmt: skip
    loaded = []
    monkeypatch.setattr(pretrained, "load_torch", lambda *a, **k: loaded.append(a))
    with pytest.raises(UserError, match="refused"):
        pretrained.verified_state(pretrained.published_weights("resnet18"), str(path))
    assert loaded == []


def test_weights_fill_the_features_and_the_output_layer_comes_from_the_seed(fake_resnet18):
    from ticketlens.lottery.models import build_model

    path, state = fake_resnet18

    def net(seed: int) -> torch.nn.Module:
        torch.manual_seed(999)  # the global generator must not decide the output layer
        model = build_model("resnet18", 5, 3, 32, pretrained.IMAGENET_MEAN, pretrained.IMAGENET_STD)
        pretrained.load_imagenet(model, "resnet18", model.output_layer, str(path.parent), seed)
        return model

    a, b, c = net(0), net(0), net(1)
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(a.state_dict()[f"features.{key}"], value), key
    out = a.output_layer
    assert a.get_submodule(out).weight.shape == (5, 512)
    assert torch.equal(a.get_submodule(out).weight, b.get_submodule(out).weight)
    assert not torch.equal(a.get_submodule(out).weight, c.get_submodule(out).weight)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_state_keys_fit_the_ticketnet_backbone(arch):
    from ticketlens.lottery.models import build_model

    model = build_model(arch, 7, 3, 64, pretrained.IMAGENET_MEAN, pretrained.IMAGENET_STD)
    theirs = {
        f"features.{k}"
        for k in getattr(torchvision.models, arch)(weights=None).state_dict()
        if not k.startswith("fc.")
    }
    ours = {k for k in model.state_dict() if not k.startswith(("normalize.", f"{model.output_layer}."))}
    assert theirs == ours
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7)
