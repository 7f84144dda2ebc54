"""The reproducible-kernels mode (ticketlens.runtime.kernels): the pins override what the caller set, they
take effect in torch (set before it loads), and the tiny study is the same bytes whichever kernels the
environment asks for; with the mode switched off (study.kernels: native) the bytes change."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from helpers import assert_same_results, make_study_dir, snakemake
from ticketlens.errors import UserError
from ticketlens.runtime import kernels

OUTSIDE = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "AUTO"}


def test_the_reproducible_mode_overrides_the_callers_kernel_variables() -> None:
    environ = dict(OUTSIDE)
    assert kernels.pin_environment(environ) == kernels.REPRODUCIBLE
    assert environ == kernels.PINNED


def test_the_native_mode_leaves_them_alone() -> None:
    environ = {**OUTSIDE, kernels.ENV: "native"}
    assert kernels.pin_environment(environ) == kernels.NATIVE
    assert environ == {**OUTSIDE, kernels.ENV: "native"}


def test_a_bad_mode_is_one_line_naming_the_variable_and_the_choices() -> None:
    with pytest.raises(
        UserError, match=r"TICKETLENS_KERNELS: got 'fast' \(allowed: reproducible or native\)"
    ):
        kernels.pin_environment({kernels.ENV: "fast"})


def test_pinning_after_torch_is_loaded_is_refused(monkeypatch) -> None:
    for key in kernels.PINNED:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv(kernels.ENV, raising=False)
    assert "torch" in sys.modules  # conftest imports it
    with pytest.raises(UserError, match="torch was imported before the kernels were pinned"):
        kernels.pin_environment()


def test_the_job_server_identity_carries_the_kernels(monkeypatch) -> None:
    from ticketlens.runtime.jobclient import identity

    monkeypatch.setenv(kernels.ENV, "native")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    native = identity()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert identity() != native  # a server started under other kernels runs no command of this client


PROBE = (
    "import json; from ticketlens.runtime import kernels; kernels.pin_environment(); import torch; "
    "kernels.configure_torch(); print(json.dumps(kernels.describe()))"
)


def _probe(**env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def _has_avx2() -> bool:
    return "avx2" in open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else False


@pytest.mark.skipif(not _has_avx2(), reason="the pins name AVX2: this processor has none")
def test_the_pins_take_effect_in_torch() -> None:
    pinned = _probe(**OUTSIDE)
    assert pinned["aten_capability"] == "AVX2" and pinned["nnpack"] is False
    assert pinned["onednn_max_cpu_isa"] == "AVX2" and pinned["mkl_cbwr"] == "COMPATIBLE"
    native = _probe(**OUTSIDE, **{kernels.ENV: "native"})
    assert native["aten_capability"] == "DEFAULT" and native["nnpack"] is True  # what the caller asked


# Each of these chooses other float kernels on a processor that has them (measured on synthbirds:
# docs/benchmarks.md); the mode must give the bytes of the default environment under every one.
OUTSIDE_CHOICES = [
    {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    {"ATEN_CPU_CAPABILITY": "default"},
    {"ONEDNN_MAX_CPU_ISA": "SSE41"},
]


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_study")
@pytest.mark.parametrize(
    "outside", OUTSIDE_CHOICES, ids=lambda env: "+".join(f"{k}={v}" for k, v in env.items())
)
def test_the_tiny_study_is_the_same_bytes_whatever_kernels_the_environment_asks_for(
    study, tmp_path, outside
) -> None:
    workdir = make_study_dir(tmp_path / "study")
    result = snakemake(workdir, "--cores", "2", env={**os.environ, **outside})
    assert result.returncode == 0, result.stderr[-4000:]
    assert_same_results(study / "results", workdir / "results")


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_study")
@pytest.mark.skipif(not _has_avx2(), reason="ATen's default kernels are this processor's own")
def test_with_the_mode_off_other_kernels_give_other_bytes(study, tmp_path) -> None:
    """The check above fails without the mode: `study.kernels: native` under ATen's default capability."""
    workdir = make_study_dir(tmp_path / "study")
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["study"]["kernels"] = "native"
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    result = snakemake(workdir, "--cores", "2", env={**os.environ, "ATEN_CPU_CAPABILITY": "default"})
    assert result.returncode == 0, result.stderr[-4000:]
    with pytest.raises(AssertionError):
        assert_same_results(study / "results", workdir / "results")
