"""Every rule spells its outputs as literal paths (so `grep -rn summary_agg.csv workflow/` finds the rule
that writes the file), and they are the files the package knows by name in `ticketlens.study`."""

from __future__ import annotations

import ast
import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

from ticketlens.study import DATASET_FILES, RESULTS, TICKET_DIR, TICKET_FILES, DatasetFiles

RULES = Path(__file__).resolve().parents[2] / "workflow" / "rules"
TICKET = f"{RESULTS}/{TICKET_DIR}/"
DATASET = DatasetFiles("{dataset}")
IN_JOB_ONLY = {"resume", "rewind"}  # train_ticket's scratch files beside its checkpoint, never outputs

EXPECTED = {
    "prepare_dataset": {DATASET.file("prepared_data"), DATASET.file("prepared_meta")},
    "make_random_sets": {DATASET.file("random_sets"), DATASET.file("calibration_sets")},
    "make_concept_set": {DATASET.file("concept_set", concept="{concept}")},
    "train_ticket": {TICKET + TICKET_FILES.checkpoint, TICKET + TICKET_FILES.metrics},
    "explain_ticket": {TICKET + f for f in (TICKET_FILES.saliency_maps, TICKET_FILES.saliency_table, TICKET_FILES.consistency, TICKET_FILES.outcomes)},
    "explain_images": {TICKET + f for f in (TICKET_FILES.image_maps, TICKET_FILES.agreement)},
    "tcav_calibration": {TICKET + TICKET_FILES.tcav_calibration},
    "tcav_concept": {TICKET + TICKET_FILES.tcav_concept},
    "summarize_dataset": {DATASET.file("summary"), DATASET.file("summary_agg"), DATASET.file("tcav_summary"), DATASET.file("findings"), DATASET.file("metrics")},
    "build_dataset_report": {DATASET.file("report"), DATASET.file("figures")},
    "build_study_report": {"results/report.md", "results/metrics.json", "results/summary.txt"},
}  # fmt: skip


def rule_outputs() -> dict[str, set[str]]:
    """Rule name -> the string literals of its `output:` section, from the rule files' text."""
    outputs: dict[str, set[str]] = {}
    for path in sorted(RULES.glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.MULTILINE)[1:]:
            name = re.match(r"rule (\w+):", block)[1]
            section = re.search(
                r"^    output:\n((?:        .*\n|\s*\n)+?)(?=^    \w+:|^\S|\Z)", block, re.MULTILINE
            )
            assert section, f"rule {name} has no output section"
            literals = set()
            for node in ast.walk(ast.parse("f(\n" + textwrap.dedent(section[1]) + "\n)")):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and "/" in node.value:
                    literals.add(node.value)
            outputs[name] = {v for v in literals if v.startswith(RESULTS + "/")}
    return outputs


def test_every_rule_spells_its_outputs_as_the_study_names_them() -> None:
    expected = {rule: {str(path) for path in paths} for rule, paths in EXPECTED.items()}
    assert rule_outputs() == expected


def test_every_named_file_of_the_study_is_a_rule_output() -> None:
    outputs = set().union(*rule_outputs().values())
    ticket_files = {f.name for f in dataclasses.fields(TICKET_FILES)} - IN_JOB_ONLY
    for name in ticket_files:
        assert TICKET + getattr(TICKET_FILES, name) in outputs, name
    for name in DATASET_FILES:
        assert str(DATASET.file(name, concept="{concept}")) in outputs, name


@pytest.mark.parametrize("name", ["summary_agg.csv", "calibration.csv", "meta.csv", "checkpoint.pt"])
def test_a_file_name_leads_to_its_rule(name: str) -> None:
    hits = [path.name for path in RULES.glob("*.smk") if f'/{name}"' in path.read_text()]
    assert len(hits) == 1, hits
