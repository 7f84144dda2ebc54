"""README's findings block is generated from the pinned results and must equal them.

The block (between `<!-- findings:start -->` and `<!-- findings:end -->`) is what `ticketlens
readme-findings` writes from results/summary.txt and results/*/findings.json. This test regenerates it from
the results in the repository (pinned by `make run`, `dvc pull`, or tracked in git) and fails when the
README says anything else; without results it skips and says why. tests/test_report.py shows the check
failing on an edited number.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ticketlens.report.readme import END, START, findings_block, pinned_inputs

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"


def test_readme_has_one_generated_findings_block() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.count(START) == 1 and text.count(END) == 1 and text.index(START) < text.index(END)


def test_readme_findings_block_equals_the_pinned_results() -> None:
    if not (RESULTS / "summary.txt").is_file():
        pytest.skip(
            "results/summary.txt not found: the README block is checked against the pinned results "
            "(run `make run` or `dvc pull`, then `ticketlens readme-findings --check`)"
        )
    text = (ROOT / "README.md").read_text()
    block = text[text.index(START) : text.index(END) + len(END)]
    assert block == findings_block(*pinned_inputs(RESULTS)), "run `ticketlens readme-findings` (make readme)"
