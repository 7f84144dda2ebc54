"""The locked environment (requirements-lock.txt) still satisfies pyproject.toml.

`make setup` installs only the lock (`--require-hashes --no-deps`), so a dependency added to pyproject.toml
without re-running `make lock` would be missing from every venv and CI run; a range narrowed past the
locked version would install a version the project no longer accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def locked(text: str) -> dict[str, tuple[str, int]]:
    """Name -> (version, number of hashes) of every pin in a `uv pip compile --generate-hashes` file."""
    pins: dict[str, tuple[str, int]] = {}
    name = None
    for line in text.splitlines():
        if match := PIN.match(line):
            name = canonicalize_name(match[1])
            pins[name] = (match[2], 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            pins[name] = (pins[name][0], pins[name][1] + 1)
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = project["project"]["dependencies"] + project["build-system"]["requires"]
    for extra in ("workflow", "dev"):
        names += project["project"]["optional-dependencies"][extra]
    return [Requirement(name) for name in names]


def unmet(requirements: list[Requirement], pins: dict[str, tuple[str, int]]) -> list[str]:
    problems = []
    for requirement in requirements:
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pin[0], prereleases=True):
            problems.append(f"{requirement} but the lock has {pin[0]}")
    return problems


def test_lock_satisfies_every_requirement_of_pyproject():
    pins = locked((ROOT / "requirements-lock.txt").read_text())
    assert unmet(project_requirements(), pins) == [], "run `make lock`"


def test_every_locked_package_carries_a_hash():
    pins = locked((ROOT / "requirements-lock.txt").read_text())
    assert len(pins) > 50
    assert [name for name, (_, hashes) in pins.items() if hashes == 0] == []


@pytest.mark.parametrize(
    ("requirement", "problem"),
    [("newpackage>=1", "not in the lock"), ("torch>=3", "but the lock has 2.14.1")],
)
def test_a_stale_lock_is_reported(requirement, problem):
    pins = locked("torch==2.14.1 \\\n    --hash=sha256:00\n")
    (message,) = unmet([Requirement(requirement)], pins)
    assert problem in message
