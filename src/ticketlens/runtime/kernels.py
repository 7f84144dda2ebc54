"""Reproducible CPU kernels: the same float results on every x86-64 processor with AVX2, whatever
kernels the processor would pick by itself.

Why: with the same code, params and seed, training synthbirds seed 1 gave 93.0% test accuracy with
oneDNN's AVX-512 kernels, 94.6% with `ONEDNN_MAX_CPU_ISA=AVX2` and 97.2% with `ATEN_CPU_CAPABILITY=default`
on one machine (docs/benchmarks.md, *Reproducible kernels*). Three libraries inside torch choose their
code by the processor at run time: ATen (its vectorised kernels), oneDNN (convolutions) and MKL (matrix
products). The `reproducible` mode (the default) pins each of them before torch starts:

* ATen's CPU capability to AVX2 (`ATEN_CPU_CAPABILITY`; its AVX-512 kernels are never used),
* oneDNN's instruction set to at most AVX2 (`ONEDNN_MAX_CPU_ISA`: no AVX-512 or AMX kernels),
* MKL's conditional numerical reproducibility to its COMPATIBLE branch (`MKL_CBWR`: the one branch MKL
  keeps bitwise equal across Intel and non-Intel processors; its AVX2 branch exists on Intel only),
* NNPACK off (`torch.backends.nnpack`; torch would use it only where oneDNN declines a convolution),

and thread counts stay what each command is given (`--threads`, `study.threads`). Measured cost: about 5%
of training time; switching oneDNN off instead (convolutions as ATen im2col + MKL) cost 2.3x. `native` lets each
library choose (faster, processor-dependent). The mode comes from $TICKETLENS_KERNELS; the Snakefile sets
it from `study.kernels`. It must be applied before torch is imported: ATen, oneDNN and MKL read their
variables once, when they first run. `pin_environment` does that in the `ticketlens` console script and in
the job server before its imports; `configure_torch` sets the two torch switches once torch is loaded.
Not covered: GPUs (cuDNN and cuBLAS choose kernels by device), other architectures (ARM, POWER), and
other versions of torch or glibc.

Stdlib only: this runs in every `ticketlens` command before anything imports torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

from ticketlens.errors import UserError

ENV = "TICKETLENS_KERNELS"
REPRODUCIBLE, NATIVE = "reproducible", "native"
MODES = (REPRODUCIBLE, NATIVE)
# What the reproducible mode sets, overriding the caller's values (measured: docs/benchmarks.md).
PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
# Variables that choose CPU kernels: the job server runs a command only for a client that agrees on them.
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR",
                    "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE")  # fmt: skip


def mode(environ: MutableMapping[str, str] | None = None) -> str:
    """The mode $TICKETLENS_KERNELS asks for (unset: reproducible); anything else is one clear error."""
    value = (os.environ if environ is None else environ).get(ENV, REPRODUCIBLE) or REPRODUCIBLE
    if value not in MODES:
        raise UserError(f"{ENV}: got {value!r} (allowed: {' or '.join(MODES)})")
    return value


def pin_environment(environ: MutableMapping[str, str] | None = None) -> str:
    """Set the reproducible mode's variables in `environ` (default: this process's), before torch loads;
    returns the mode. Refuses a process that has imported torch already: its kernels are chosen."""
    environ = os.environ if environ is None else environ
    chosen = mode(environ)
    if chosen == REPRODUCIBLE:
        if environ is os.environ and "torch" in sys.modules and not _pinned(environ):
            raise UserError("reproducible kernels: torch was imported before the kernels were pinned")
        environ.update(PINNED)
    return chosen


def _pinned(environ: MutableMapping[str, str]) -> bool:
    return all(environ.get(key) == value for key, value in PINNED.items())


def configure_torch(environ: MutableMapping[str, str] | None = None) -> None:
    """Switch off NNPACK in a process whose environment `pin_environment` pinned (a no-op
    elsewhere, e.g. in a test process, and when torch is not loaded: such a command computes nothing
    with it)."""
    environ = os.environ if environ is None else environ
    torch = sys.modules.get("torch")
    if torch is None or mode(environ) != REPRODUCIBLE or not _pinned(environ):
        return
    torch.backends.nnpack.set_flags(False)


def signature(environ: MutableMapping[str, str] | None = None) -> dict[str, str | None]:
    """The mode and every kernel-choosing variable: two processes with the same signature compute the same
    float results on this machine (the job server compares its own with each client's)."""
    environ = os.environ if environ is None else environ
    return {ENV: mode(environ), **{key: environ.get(key) for key in KERNEL_VARIABLES}}


def describe() -> dict[str, object]:
    """What this process runs with (torch loaded): for logs, the benchmark and the tests."""
    import torch  # lazy: only called once torch is loaded anyway

    return {
        "mode": mode(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": bool(torch.backends.mkldnn.enabled),
        "nnpack": bool(torch._C._get_nnpack_enabled()),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
        "threads": torch.get_num_threads(),
    }
