"""What a checkpoint is and what it was made from, checked wherever one is read.

Every checkpoint records its identity (dataset, seed, branch, round) and the sha256 of its parent (the
checkpoint a ticket round pruned, or the ticket a control took its mask from); its metrics.json records
the sha256 of the checkpoint file itself, and saliency.npz the sha256 of the checkpoint it explains.
Snakemake decides re-runs by modification time, so a checkpoint replaced with `cp -p` (old mtime) would
otherwise be used silently: `ticketlens.runtime.startup.check_results` compares the recorded hashes with
the files at start-up.

This module imports neither torch nor Snakemake: the Snakefile's start-up check uses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ticketlens.errors import UserError
from ticketlens.fileio import file_sha256
from ticketlens.study import TICKET_FILES, Ticket

IDENTITY_KEYS = ("dataset", "seed", "branch", "round")
CHECKPOINT_SHA = "checkpoint_sha256"  # in metrics.json and saliency.npz
PARENT_SHA = "parent_sha256"  # in checkpoint.pt and metrics.json
DATA_SHA = "data_sha256"  # in checkpoint.pt: the data.pt it was trained on
SETTINGS_SHA = "settings_sha256"  # in metrics.json: the params that trained it (`settings_fingerprint`)
LEGACY = "no checkpoint hash"


def identity(ticket: Ticket) -> dict[str, Any]:
    return dataclasses.asdict(ticket)


def describe(found: Mapping[str, Any]) -> str:
    """`mnist seed 0 reinit round 1`, or what is missing."""
    if any(found.get(key) is None for key in IDENTITY_KEYS):
        return "no identity (written by an older ticketlens)"
    return "{dataset} seed {seed} {branch} round {round}".format(**found)


def folder_ticket(path: Path) -> Ticket | None:
    """The ticket whose folder holds `path`, or None outside the results tree (tests, benchmarks)."""
    try:
        return Ticket.from_folder(Path(path).parent)
    except ValueError:
        return None


def check_identity(found: Mapping[str, Any], expected: Ticket, path: Path, role: str) -> None:
    """Refuse a file whose recorded identity is not `expected` (e.g. a control copied over a ticket)."""
    got = {key: found.get(key) for key in IDENTITY_KEYS}
    if got != identity(expected):
        raise UserError(
            f"{path} holds {describe(got)}, not {role} {describe(identity(expected))}: it was copied, "
            f"moved or made by another version; delete {Path(path).parent} and re-run"
        )


def recorded_checkpoint_sha(checkpoint_path: Path) -> str | None:
    """The sha256 that the metrics.json beside a checkpoint records for it (None if there is none)."""
    metrics_path = Path(checkpoint_path).parent / TICKET_FILES.metrics
    if not metrics_path.is_file():
        return None
    return read_json(metrics_path).get(CHECKPOINT_SHA)


def check_file_sha(path: Path, recorded: str | None, digest: str | None = None) -> str:
    """The file's sha256, refused when it differs from the one recorded at training time."""
    digest = digest or file_sha256(path)
    if recorded is not None and digest != recorded:
        raise UserError(replaced_message(Path(path)))
    return digest


def settings_fingerprint(model: str, model_width: float, training: Any, pruning: Any) -> str:
    """sha256 of the params that train a ticket (the rule's model, width, training and pruning settings;
    `checkpoint_every` only decides when resume.pt is written). metrics.json records it, so the start-up
    check sees a params change even where Snakemake has no metadata (results copied, pulled, checked out)."""
    settings = {
        "model": model,
        "model_width": float(model_width),
        "training": training.to_dict(exclude=("checkpoint_every",)),
        "pruning": pruning.to_dict(),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def check_trained_on(checkpoint: Mapping[str, Any], checkpoint_path: Path, data_path: Path) -> None:
    """Refuse data other than the data.pt a checkpoint was trained on (its recorded `data_sha256`): another
    valid data.pt copied in with `cp -p` keeps an old mtime, so Snakemake would explain or test the ticket
    on it. Checkpoints written before the hash was recorded are not checked."""
    recorded = checkpoint.get(DATA_SHA)
    if recorded is not None and file_sha256(Path(data_path)) != recorded:
        raise UserError(
            f"{data_path} is not the data {checkpoint_path} was trained on (sha256 differs: it was replaced "
            "after training); put the original back, or prepare it and everything made from it again: "
            f"snakemake --cores all --forcerun {data_path}"
        )


def replaced_message(path: Path) -> str:
    return (
        f"{path} is not the checkpoint that {path.parent / TICKET_FILES.metrics} was written with "
        f"(sha256 differs: replaced or edited after training); delete {path.parent} and re-run"
    )


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(
            f"{path} is unreadable ({type(err).__name__}): delete {path.parent} and re-run"
        ) from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a JSON object: delete {path.parent} and re-run")
    return value
