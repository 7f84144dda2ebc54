"""A failed `ticketlens` command leaves its error in the --log file too (SLURM puts stderr elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TOY, TOY_PRUNING
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


TRAIN = ["train-ticket", "--ticket", "mnist/seed_0/ticket/round_0", "--data", "data.pt", "--model", "lenet300",
         "--model-width", "1", "--training", TOY.training.to_json(), "--pruning", TOY_PRUNING.to_json(),
         "--checkpoint", "c.pt", "--metrics", "m.json"]  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--training", "{bad", "--training '{bad': Expecting property name"),
        ("--training", '{"lr": 1}', "--training '{\"lr\": 1}': TrainingSettings.__init__() missing"),
        ("--training", "[1]", "--training '[1]': not a JSON object of TrainingSettings"),
        ("--ticket", "nonsense", "--ticket 'nonsense': nonsense is not a ticket folder"),
    ],
)
def test_the_internal_commands_given_bad_json_are_one_line(tmp_path, capsys, flag, value, expected):
    """What a rule passes is the JSON of a settings section; by hand (or from an edited rule) it can be
    anything: one line naming the flag, exit 2 (issue 22)."""
    argv = list(TRAIN)
    argv[argv.index(flag) + 1] = value
    assert cli.run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"ticketlens train-ticket: error: {expected}"), err
