"""Shared file helpers: atomic, byte-reproducible, one-line errors."""

from __future__ import annotations

import pytest
import torch

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
