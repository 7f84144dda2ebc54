"""A ticket's tables are read with the columns and rows its saliency.npz and its round say they have: a cut,
emptied or foreign table stops the summary in one line naming it, instead of a report of n/a cells and
"3 of 38 maps" (issue 22 item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import CONCEPTS, make_results_tree
from ticketlens.cli import run
from ticketlens.errors import UserError

TICKET = Path("seed_0") / "ticket" / "round_1"


def _cut(path: Path, size: int) -> None:
    """The first `size` bytes of `path` (-1: its header line only)."""
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\n") + 1 if size < 0 else size])


@pytest.fixture
def study(tmp_path: Path):
    return make_results_tree(tmp_path, seeds=[0], rounds=1, concepts=CONCEPTS[:1])


@pytest.mark.parametrize(
    ("name", "size", "expected"),
    [
        (
            "tcav/{concept}.csv",
            300,
            r"TCAV table .*has \d+ rows, expected 6 \(one per concept x layer x target_class\)",
        ),
        ("tcav/calibration.csv", 700, r"TCAV table .*calibration.csv has \d+ rows, expected \d+ "),
        (
            "saliency.csv",
            700,
            r"saliency table .*saliency.csv has \d+ rows, expected 12 \(one per probe x method\)",
        ),
        ("consistency.csv", 0, r"consistency table .*consistency.csv is empty"),
        ("consistency.csv", 45, r"consistency table .*consistency.csv lacks the column\(s\) "),
        (
            "consistency.csv",
            -1,
            r"consistency table .*consistency.csv has 0 rows, expected 36",
        ),  # header only
    ],
)
def test_a_cut_table_is_refused_in_one_line_naming_it(study, capsys, name, size, expected):
    path = study.results / TICKET / name.format(concept=study.concepts[0])
    assert path.stat().st_size > size
    _cut(path, size)
    with pytest.raises(UserError, match=expected) as info:
        study.summarize()
    assert "\n" not in str(info.value) and "delete it and re-run snakemake" in str(info.value)
    assert run(study.summarize_args()) == 2  # the command: one line, exit 2, no traceback
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ticketlens summarize-dataset: error: ")
    assert not study.output("summary").exists()


def test_a_doubled_table_is_refused(study):
    path = study.results / TICKET / "saliency.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, *lines[1:3]]) + "\n")
    with pytest.raises(UserError, match=r"saliency.csv has 14 rows, expected 12 .*cut short or doubled"):
        study.summarize()


def test_whole_tables_pass(study):
    study.summarize()
    assert study.output("summary").is_file()
