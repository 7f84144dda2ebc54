"""Where a job computes: `study.device` (auto | cpu | cuda | cuda:N) resolved once per job and threaded
through training, evaluation, the pixel explanations and TCAV; no other module names a device.

Data stay on the CPU as uint8 and move to the device batch by batch (`to_device`: pinned memory and a
non-blocking copy on CUDA, nothing at all on the CPU), so the CPU path runs exactly the operations it
always ran. Training may use bf16 autocast and channels-last memory (`training.precision`,
`training.channels_last`); both are off on the CPU unless asked for, and explanations always run in fp32.

Reproducibility: on the CPU, same params on the same machine give the same bytes (fixed thread count,
`torch.use_deterministic_algorithms(True)`). On CUDA, `configure` also sets `CUBLAS_WORKSPACE_CONFIG`
(`:4096:8`, before the first cuBLAS call) and turns cuDNN's benchmark autotuner off, which makes a run
repeatable on the same GPU model, driver and library versions; results still differ from the CPU's and
between GPU models (other kernels), and bf16 autocast changes every number it touches.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from ticketlens.errors import UserError

DEVICES = "auto, cpu, cuda, cuda:N"  # the values of study.device
PRECISIONS = ("fp32", "bf16")  # the values of training.precision
CUBLAS_WORKSPACE = ":4096:8"
HOST = torch.device("cpu")  # where data are prepared and files are written and read
SHAPES_ONLY = torch.device("meta")  # tensors without storage: a model's structure in milliseconds


def resolve_device(name: str) -> torch.device:
    """`auto` -> the first GPU when CUDA is available, else the CPU; `cuda:N` is checked to exist."""
    text = str(name).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UserError(f"study.device: got '{name}' (allowed: {DEVICES})") from None
    if device.type == "cpu" and device.index is None:
        return device
    if device.type != "cuda":
        raise UserError(f"study.device: got '{name}' (allowed: {DEVICES})")
    if not torch.cuda.is_available():
        raise UserError(f"study.device: got '{name}' but CUDA is not available here (allowed: auto, cpu)")
    index = 0 if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise UserError(
            f"study.device: got '{name}' but this machine has {torch.cuda.device_count()} GPU(s) "
            f"(allowed: cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
        )
    return torch.device("cuda", index)


def configure(device: torch.device, deterministic_cpu: bool = True) -> None:
    """Deterministic kernels wherever torch has them. On the CPU (for training: `deterministic_cpu`)
    torch's strict mode, as always. On CUDA cuBLAS's fixed workspace, cuDNN without autotuning and torch's
    deterministic mode with `warn_only`: the backward of AdaptiveAvgPool2d and NLLLoss (cross-entropy)
    have no deterministic CUDA kernel, so strict mode would stop every ResNet run; they warn instead."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif deterministic_cpu:
        torch.use_deterministic_algorithms(True)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on `device`: the tensor itself when it is there, a pinned non-blocking copy to a GPU."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def model_device(model: nn.Module) -> torch.device:
    """The device a model computes on (that of its first parameter or buffer; the CPU for none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def use_channels_last(setting: bool | None, device: torch.device) -> bool:
    """`training.channels_last`: null means on for CUDA and off elsewhere."""
    return device.type == "cuda" if setting is None else bool(setting)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device for `precision: bf16`; nothing for fp32."""
    if precision not in PRECISIONS:
        raise UserError(f"training.precision: got '{precision}' (allowed: {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def host(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in host memory (for numpy or a file): itself on the CPU, a copy from a GPU."""
    return tensor.detach().cpu()
