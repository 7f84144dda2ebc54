"""`study.device` is threaded everywhere: the compute of training, evaluation, Grad-CAM, saliency and TCAV
runs on the device it is given (proved on the `meta` device, which holds no data: a tensor made on a fixed
device and mixed in fails), no module names a device, and an explicit `device: cpu` is the default's bytes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ticketlens.device import autocast, resolve_device, to_device, use_channels_last
from ticketlens.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src" / "ticketlens"
META = torch.device("meta")
# a device named in code: .cuda(), a "cpu"/"cuda[:N]" string, torch.device(...), device=... literal
FIXED_DEVICE = re.compile(r"\.cuda\(|[\"'](?:cpu|cuda(?::\d+)?)[\"']|torch\.device\(")


def fixed_device_lines(root: Path) -> list[str]:
    """Every line of a module under `root` (but device.py, where devices are resolved) naming a device."""
    hits = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "device.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if FIXED_DEVICE.search(code):
                hits.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return hits


def test_no_module_names_a_device():
    assert fixed_device_lines(SRC) == []


def test_the_device_grep_finds_a_fixed_device(tmp_path):
    (tmp_path / "bad.py").write_text('x = torch.zeros(3).cuda()\ny = torch.ones(2, device="cpu")\n')
    (tmp_path / "device.py").write_text('torch.device("cuda")\n')
    assert [line.split(":")[1] for line in fixed_device_lines(tmp_path)] == ["1", "2"]


def test_resolve_device_auto_cpu_and_one_line_errors():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match=r"study.device: got 'tpu' \(allowed: auto, cpu, cuda, cuda:N\)"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available here"):
            resolve_device("cuda:1")


def test_on_the_cpu_nothing_moves_and_channels_last_and_bf16_are_off():
    x = torch.arange(6)
    assert to_device(x, torch.device("cpu")) is x
    assert use_channels_last(None, torch.device("cpu")) is False
    assert use_channels_last(True, torch.device("cpu")) is True
    with autocast(torch.device("cpu"), "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(UserError, match="training.precision: got 'fp16'"):
        autocast(torch.device("cpu"), "fp16")


def _meta_model():
    from ticketlens.lottery.models import build_model

    torch.manual_seed(0)
    return build_model("conv4", 3, 3, 32, [0.5] * 3, [0.25] * 3, 0.125).to(META)


def _host_batch(n: int = 16):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return images, torch.arange(n) % 3


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_training_step_and_evaluation_compute_on_the_given_device(augment):
    from helpers import TOY
    from ticketlens.lottery.training import BatchStream, batch_loss, evaluation_totals, make_optimizer

    model = _meta_model()
    images, labels = _host_batch()
    x, y = next(BatchStream(images, labels, 4, seed=0, device=META, augment=augment).batches(0))
    assert x.device == META and y.device == META and x.dtype == torch.float32
    optimizer = make_optimizer(model.parameters(), TOY.training)
    loss = batch_loss(model, x, y, "fp32")
    loss.backward()
    optimizer.step()
    assert loss.device == META
    assert all(p.device == META for p in model.parameters())
    loss_sum, correct = evaluation_totals(model, images, labels, batch_size=5)
    assert loss_sum.device == META and correct.device == META


def test_explanations_compute_on_the_device_of_the_model():
    from ticketlens.explanations.saliency import gradcam_tensors, saliency_tensors
    from ticketlens.explanations.tcav import layer_activations, layer_gradients

    model = _meta_model().eval()
    images, labels = _host_batch(6)
    x = images.float() / 255  # host images: the functions move them batch by batch
    standard, signed = gradcam_tensors(model, model.gradcam_layer, x, labels, batch_size=4)
    assert standard.device == META and signed.device == META and standard.shape == (6, 32, 32)
    assert saliency_tensors(model, x, labels, batch_size=4).device == META
    activations = layer_activations(model, model.tcav_layers, x)
    gradients = layer_gradients(model, model.tcav_layers, x, 1)
    for name in model.tcav_layers:
        assert activations[name].device == META and gradients[name].device == META


def test_bf16_autocasts_the_training_forward_pass_and_fp32_does_not():
    from ticketlens.lottery.models import build_model
    from ticketlens.lottery.training import batch_loss

    torch.manual_seed(0)
    model = build_model("conv4", 3, 3, 32, [0.5] * 3, [0.25] * 3, 0.125)
    images, labels = _host_batch(8)
    x = images.float() / 255
    with torch.no_grad():
        fp32, bf16 = batch_loss(model, x, labels, "fp32"), batch_loss(model, x, labels, "bf16")
    assert fp32.dtype == bf16.dtype == torch.float32  # cross-entropy runs in fp32 under autocast
    assert torch.equal(fp32, torch.nn.functional.cross_entropy(model(x), labels).detach())
    assert not torch.equal(fp32, bf16) and abs((fp32 - bf16).item()) < 0.05
