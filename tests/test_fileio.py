"""Shared file helpers: atomic, byte-reproducible, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ticketlens import fileio
from ticketlens.errors import UserError
from ticketlens.fileio import atomic_save, atomic_write, load_torch


def test_identical_objects_give_identical_bytes(tmp_path):
    obj = {"weights": torch.arange(12.0).view(3, 4), "name": "ticket"}
    atomic_save(obj, tmp_path / "a.pt")
    atomic_save(obj, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(load_torch(tmp_path / "a.pt", "test file")["weights"], obj["weights"])


def test_failed_write_leaves_no_target_and_no_temp_file(tmp_path):
    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "out.csv", broken)
    assert list(tmp_path.iterdir()) == []


def test_missing_and_corrupt_files_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="checkpoint .* not found \\(train it first\\)"):
        load_torch(tmp_path / "nope.pt", "checkpoint", "train it first")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="is unreadable .*delete it and re-run"):
        load_torch(tmp_path / "bad.pt", "checkpoint")


def dev_full(path):
    """Instead of the file ticketlens opens for writing, /dev/full: each write fails with ENOSPC."""
    return open("/dev/full", "wb")  # noqa: SIM115 (the caller closes it)


@pytest.fixture
def disk_full(monkeypatch):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    monkeypatch.setattr(fileio, "_open_for_writing", dev_full)


@pytest.mark.parametrize(
    "write",
    [
        lambda path: atomic_save({"weights": torch.zeros(10_000)}, path),  # torch's own zip writer
        lambda path: fileio.write_json({"accuracy": 0.9}, path),
        lambda path: fileio.write_npz({"maps": np.zeros((4, 8, 8))}, path),
    ],
    ids=["torch", "json", "npz"],
)
def test_a_full_disk_is_one_line_naming_the_target(tmp_path, disk_full, write):
    target = tmp_path / "results" / "out.bin"
    with pytest.raises(UserError) as info:
        write(target)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{target}: cannot write (")
    assert message.endswith("; free disk space or make the results folder writable, then re-run")
    assert list((tmp_path / "results").iterdir()) == []  # no target, no temporary file


def test_a_read_only_results_folder_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):  # what mkstemp meets in a read-only folder (root ignores chmod)
        raise PermissionError(13, "Permission denied", str(tmp_path / ".out.json.x1y2.tmp"))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    with pytest.raises(UserError) as info:
        fileio.write_json({}, tmp_path / "out.json")
    assert str(info.value) == (
        f"{tmp_path / 'out.json'}: cannot write (Permission denied); "
        "free disk space or make the results folder writable, then re-run"
    )


def test_cli_disk_full_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    from helpers import TOY, TOY_PRUNING, make_toy_data
    from ticketlens.cli import run
    from ticketlens.data.prepared import save_prepared
    from ticketlens.study import Ticket

    data = tmp_path / "data.pt"
    save_prepared(make_toy_data(), data)
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    monkeypatch.setattr(fileio, "_open_for_writing", dev_full)
    monkeypatch.chdir(tmp_path)
    ticket = Ticket("toy", 0, "ticket", 0)
    folder = ticket.folder
    args = ["train-ticket", "--data", str(data), "--model", TOY.model, "--model-width", "0.5"]
    args += [
        "--training",
        TOY.training.to_json(),
        "--pruning",
        TOY_PRUNING.to_json(),
        "--ticket",
        ticket.name,
    ]
    args += ["--checkpoint", str(ticket.file("checkpoint")), "--metrics", str(ticket.file("metrics"))]
    assert run(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == [
        f"ticketlens train-ticket: error: {folder}/resume.pt: cannot write (No space left on device); "
        "free disk space or make the results folder writable, then re-run"
    ]


def test_npz_with_an_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "saliency.npz"
    np.savez(path, probe=np.arange(3), gradcam=np.array([{"x": 1}, None], dtype=object))
    with pytest.raises(UserError) as info:
        fileio.load_npz(path, "saliency maps")
    assert str(info.value) == (
        f"saliency maps {path} holds an object array (allowed: numeric and text arrays; "
        "it was not written by ticketlens): delete it and re-run"
    )
    from ticketlens.explanations.compare import load_standard_maps

    with pytest.raises(UserError, match="holds an object array"):  # the explain step's reader
        load_standard_maps(path, np.arange(3))
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(UserError, match="is not an .npz archive: delete it and re-run"):
        fileio.load_npz(tmp_path / "text.npz", "saliency maps")
