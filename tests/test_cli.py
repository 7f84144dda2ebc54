"""A failed `ticketlens` command leaves its error in the --log file too (SLURM puts stderr elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ticketlens import cli

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "params.schema.yaml"


def test_user_error_is_one_line_on_stderr_and_in_the_log(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("pruning: {rate_fc: 1.5}\n")
    log = tmp_path / "logs" / "check.log"
    assert cli.run(["--log", str(log), "check-params", str(bad), "--schema", str(SCHEMA)]) == 2
    stderr_lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(stderr_lines) == 1
    assert stderr_lines[0].startswith("ticketlens check-params: error:")
    assert stderr_lines[0] in log.read_text()


def test_unexpected_error_traceback_is_in_the_log(tmp_path, monkeypatch, capsys):
    def broken(name, args):
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(cli, "run_command", broken)
    log = tmp_path / "check.log"
    with pytest.raises(RuntimeError):
        cli.run(["--log", str(log), "check-params"])
    text = log.read_text()
    assert "ticketlens check-params: unexpected error" in text
    assert "Traceback" in text and "RuntimeError: something nobody expected" in text
    assert "unexpected error" not in capsys.readouterr().err  # stderr gets Python's own traceback


def test_no_log_file_means_stderr_only(tmp_path, capsys):
    assert cli.run(["check-params", str(tmp_path / "missing.yaml"), "--schema", str(SCHEMA)]) == 2
    err = capsys.readouterr().err
    assert err.count("ticketlens check-params: error:") == 1
