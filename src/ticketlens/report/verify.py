"""`ticketlens verify`: how far a finished study is from the pinned one, in a few lines.

The pinned study is the small results that git tracks (`study.tracked_results`: the summary tables,
findings.json, metrics.json, report.md and summary.txt, `cache: false` in dvc.yaml), read from a git
revision (default HEAD). After `make run` the working tree holds this machine's results: `verify` says
whether those files are byte-identical to the pinned ones, which metrics of results/metrics.json moved
most, and whether every findings sentence (summary.txt and each report.md) reads the same.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ticketlens.errors import UserError
from ticketlens.study import STUDY_OUTPUTS, tracked_results

TOP_METRICS = 5  # metric differences printed


@dataclass(frozen=True)
class Comparison:
    """The pinned and the finished study, file by file."""

    files: int  # tracked files compared
    different: tuple[str, ...]  # present in both, other bytes
    missing: tuple[str, ...]  # pinned, but not in the finished study
    metric_differences: tuple[
        tuple[str, float, float], ...
    ]  # (key, pinned, now), largest |now - pinned| first
    sentences: int  # findings sentences compared
    different_sentences: tuple[tuple[str, str], ...]  # (pinned, now)

    @property
    def identical(self) -> bool:
        return not self.different and not self.missing


def compare_studies(pinned: dict[str, bytes], results: Path) -> Comparison:
    """Compare pinned files (path relative to results/ -> bytes) with those under `results`."""
    different, missing = [], []
    for name, data in sorted(pinned.items()):
        path = results / name
        if not path.is_file():
            missing.append(name)
        elif path.read_bytes() != data:
            different.append(name)
    metrics_name = STUDY_OUTPUTS["metrics"]
    differences = _metric_differences(
        _json(pinned.get(metrics_name), f"pinned {metrics_name}"),
        _json(_read(results / metrics_name), f"{results / metrics_name}"),
    )
    pinned_lines, now_lines = _sentences(pinned.get), _sentences(lambda name: _read(results / name))
    changed = [(a, b) for a, b in zip(pinned_lines, now_lines, strict=False) if a != b]
    changed += [(a, "(missing)") for a in pinned_lines[len(now_lines) :]]
    changed += [("(missing)", b) for b in now_lines[len(pinned_lines) :]]
    return Comparison(
        len(pinned), tuple(different), tuple(missing), differences, len(pinned_lines), tuple(changed)
    )


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _json(data: bytes | None, what: str) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        return json.loads(data)
    except ValueError as err:
        raise UserError(f"{what}: not JSON ({err})") from None


def _flatten(values: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(values, dict):
        flat: dict[str, float] = {}
        for key, value in values.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    if isinstance(values, int | float) and not isinstance(values, bool):
        return {prefix.rstrip("."): float(values)}
    return {}


def _metric_differences(pinned: dict[str, Any], now: dict[str, Any]) -> tuple[tuple[str, float, float], ...]:
    old, new = _flatten(pinned), _flatten(now)
    rows = [(key, old[key], new.get(key, math.nan)) for key in old]
    rows = [row for row in rows if not (row[1] == row[2] or (math.isnan(row[1]) and math.isnan(row[2])))]
    return tuple(sorted(rows, key=lambda row: -abs(row[2] - row[1]) if not math.isnan(row[2]) else -math.inf))


def _sentences(read) -> list[str]:
    """The findings sentences: summary.txt's dataset lines, then every report.md's text lines."""
    lines: list[str] = []
    summary = read(STUDY_OUTPUTS["summary"])
    if summary is not None:
        lines += [line for line in summary.decode().splitlines() if line and not line.startswith("Report:")]
    summary_datasets = [line.split(":")[0] for line in lines]
    for dataset in summary_datasets:
        report = read(f"{dataset}/report.md")
        if report is not None:
            lines += [f"{dataset}: {line}" for line in report.decode().splitlines() if _is_sentence(line)]
    return lines


def _is_sentence(line: str) -> bool:
    """Prose of a report, not its headings, tables or figures."""
    text = line.strip()
    return bool(text) and not text.startswith(("#", "|", "![", "```"))


def format_comparison(comparison: Comparison, revision: str) -> list[str]:
    """The few lines `ticketlens verify` prints."""
    c = comparison
    if c.identical:
        lines = [f"byte-identical: all {c.files} tracked result files equal the pinned study ({revision})"]
    else:
        names = ", ".join([*c.different, *(f"{m} (missing)" for m in c.missing)][:6])
        more = len(c.different) + len(c.missing) - 6
        lines = [
            f"not byte-identical: {len(c.different) + len(c.missing)} of {c.files} tracked result files differ "
            f"from the pinned study ({revision}): {names}{f' and {more} more' if more > 0 else ''}"
        ]
    if c.metric_differences:
        shown = "; ".join(f"{k} {a:.6g} -> {b:.6g}" for k, a, b in c.metric_differences[:TOP_METRICS])
        lines.append(f"largest metric differences (results/metrics.json): {shown}")
    else:
        lines.append("metrics: every value of results/metrics.json equals the pinned one")
    if not c.different_sentences:
        lines.append(f"findings: all {c.sentences} sentences agree")
    else:
        lines.append(f"findings: {len(c.different_sentences)} of {c.sentences} sentences differ; first:")
        pinned, now = c.different_sentences[0]
        lines += [f"  pinned: {pinned}", f"  now:    {now}"]
    return lines


def pinned_files(revision: str, results: Path, repository: Path | None = None) -> dict[str, bytes]:
    """The tracked result files at a git revision, relative to `results` (which must be in the repository)."""
    repository = repository or Path.cwd()
    prefix = _git(["rev-parse", "--show-prefix"], repository).decode().strip()
    listed = _git(
        ["ls-tree", "-r", "--name-only", "--full-name", revision, "--", str(results)], repository, revision
    )
    root = f"{prefix}{results.as_posix().strip('/')}/"
    names = [n for n in listed.decode().splitlines() if n.startswith(root)]
    datasets = {Path(n[len(root) :]).parts[0] for n in names if len(Path(n[len(root) :]).parts) > 1}
    wanted = {str(p) for p in tracked_results(sorted(datasets))}
    files = {
        n[len(root) :]: _git(["show", f"{revision}:{n}"], repository)
        for n in names
        if n[len(root) :] in wanted
    }
    if STUDY_OUTPUTS["metrics"] not in files:
        raise UserError(
            f"pinned results: git revision {revision!r} tracks no {results / STUDY_OUTPUTS['metrics']} "
            "(allowed: a revision whose commit holds the pinned study's small results)"
        )
    return files


def _git(args: list[str], repository: Path, revision: str | None = None) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=repository, capture_output=True, check=False)
    except FileNotFoundError:
        raise UserError("pinned results: git not found (allowed: a git checkout with git on PATH)") from None
    if done.returncode != 0:
        why = done.stderr.decode().strip().splitlines()[-1:] or ["failed"]
        what = f"revision {revision!r}" if revision else "git"
        raise UserError(f"pinned results: {what}: {why[0]}")
    return done.stdout


def verify(pinned: str = "HEAD", results: Path = Path("results")) -> int:
    """Print how the study in `results` compares with the one pinned at git revision `pinned`;
    exit status 0 when byte-identical, 1 when not."""
    comparison = compare_studies(pinned_files(pinned, Path(results)), Path(results))
    print("\n".join(format_comparison(comparison, pinned)))
    return 0 if comparison.identical else 1
