"""What the Snakefile runs at start-up: the check that every trained ticket on disk is what its files record.

Snakemake decides re-runs by modification time, so a checkpoint replaced with `cp -p` (old mtime) would
otherwise be used silently: `check_results` compares the hashes recorded at training time
(`ticketlens.lottery.provenance`) with the files, through a hash cache so that a no-op start hashes nothing.

This module imports neither torch nor Snakemake: the Snakefile calls `check_results` on every start.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ticketlens.errors import UserError
from ticketlens.fileio import atomic_write_text, file_sha256, load_npz, write_json
from ticketlens.lottery.provenance import (
    CHECKPOINT_SHA,
    LEGACY,
    PARENT_SHA,
    SETTINGS_SHA,
    check_identity,
    describe,
    identity,
    read_json,
    replaced_message,
    settings_fingerprint,
)
from ticketlens.study import TICKET_FILES, DatasetFiles, StudyParams, Ticket


class HashCache:
    """sha256 of files keyed by (size, mtime, ctime, inode): a no-op re-run hashes nothing. `cp -p` keeps
    the mtime but cannot keep the ctime (and usually not the inode), so a replaced file is hashed again."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, list[Any]] = {}
        if self.path is not None and self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = {}
            self.entries = loaded if isinstance(loaded, dict) else {}  # a cache: rebuilt when unusable
        self.changed = False

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        key = str(path.resolve())
        entry = self.entries.get(key)
        if isinstance(entry, list) and len(entry) == 5 and entry[:4] == stamp:
            return entry[4]
        digest = file_sha256(path)
        self.entries[key] = [*stamp, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if self.path is not None and self.changed:
            # a cache that cannot be written only costs time on the next start
            with contextlib.suppress(OSError, UserError):
                write_json(self.entries, self.path, sort_keys=True)


def check_results(params: StudyParams, root: Path = Path("."), cache_path: Path | None = None) -> None:
    """Refuse to start while any trained ticket of the study is not what its files record: a checkpoint
    replaced or edited after training, metrics of another ticket, a ticket trained from a parent that has
    since changed, saliency maps of another checkpoint. The message says which folders to delete."""
    cache = HashCache(cache_path)
    problems = [
        p for name in params.study.datasets for p in _dataset_problems(params, name, Path(root), cache)
    ]
    cache.save()
    if problems:
        folders = sorted({folder for folder, _ in problems})
        raise UserError(
            f"{len(problems)} trained result(s) on disk are not what they claim to be: "
            + "; ".join(message for _, message in problems[:5])
            + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            + f". Delete {' '.join(folders)} and re-run (what depends on them is re-run too)"
        )


def _dataset_problems(
    params: StudyParams, dataset: str, root: Path, cache: HashCache
) -> list[tuple[str, str]]:
    """(folder to delete, what is wrong) per ticket; results written entirely before hashes were recorded
    are one problem for the whole dataset folder."""
    problems = list(_ticket_problems(params, dataset, root, cache))
    trained = [t for t in params.study.tickets(dataset) if (root / t.folder / TICKET_FILES.metrics).is_file()]
    if problems and len(problems) == len(trained) and all(LEGACY in message for _, message in problems):
        folder = root / DatasetFiles(dataset).folder
        return [(str(folder), f"{folder} was written by an older ticketlens ({LEGACY})")]
    return problems


def _ticket_problems(
    params: StudyParams, dataset: str, root: Path, cache: HashCache
) -> Iterator[tuple[str, str]]:
    recorded: dict[Ticket, str | None] = {}
    one_shot = params.pruning.one_shot
    for ticket in params.study.tickets(dataset):  # parents come before their children
        folder = root / ticket.folder
        metrics_path = folder / TICKET_FILES.metrics
        if not metrics_path.is_file():
            continue
        recorded[ticket] = None
        try:
            metrics = read_json(metrics_path)
            problem = _ticket_problem(ticket, folder, metrics, recorded, one_shot, cache)
        except UserError as err:
            problem = str(err)
        if problem:
            yield str(folder), problem
        else:
            recorded[ticket] = metrics[CHECKPOINT_SHA]


def _ticket_problem(
    ticket: Ticket,
    folder: Path,
    metrics: dict[str, Any],
    recorded: dict[Ticket, str | None],
    one_shot: bool,
    cache: HashCache,
) -> str | None:
    metrics_path = folder / TICKET_FILES.metrics
    check_identity(metrics, ticket, metrics_path, "the metrics of")
    own = metrics.get(CHECKPOINT_SHA)
    if own is None:
        return f"{metrics_path} records {LEGACY} (written by an older ticketlens)"
    checkpoint = folder / TICKET_FILES.checkpoint
    if checkpoint.is_file() and cache.sha256(checkpoint) != own:
        return replaced_message(checkpoint)
    # A child older than what it was made from is re-run by Snakemake anyway (an interrupted run after
    # a change): only a child that Snakemake would keep must match.
    parent = ticket.parent(one_shot)
    parent_checkpoint = folder.parent.parent / parent.branch / f"round_{parent.round}" if parent else None
    if (
        parent is not None
        and recorded.get(parent) is not None
        and metrics.get(PARENT_SHA) != recorded[parent]
        and _kept(checkpoint, parent_checkpoint / TICKET_FILES.checkpoint)
    ):
        return f"{folder} was trained from another {describe(identity(parent))} than the one in {parent_checkpoint}"
    maps = folder / TICKET_FILES.saliency_maps
    if _kept(maps, checkpoint) and _npz_checkpoint_sha(maps) != own:
        return f"{maps} explains another checkpoint than {checkpoint}"
    return None


def _kept(output: Path, made_from: Path) -> bool:
    """Whether Snakemake would keep `output`: both exist and it is not older than what it was made from."""
    if not (output.is_file() and made_from.is_file()):
        return False
    return output.stat().st_mtime_ns >= made_from.stat().st_mtime_ns


def _npz_checkpoint_sha(path: Path) -> str | None:
    """The checkpoint hash saliency.npz records (None for maps written before it was recorded)."""
    value = load_npz(path, "saliency maps", keys=(CHECKPOINT_SHA,)).get(CHECKPOINT_SHA)
    return None if value is None else str(value)


def hash_cache_path(workdir: Path) -> Path:
    """Where the Snakefile keeps the start-up check's hash cache (Snakemake's own metadata folder)."""
    return Path(workdir) / ".snakemake" / "ticketlens" / "checkpoint_hashes.json"


# ------------------------------------------------------------------ training settings, with or without metadata

TRAIN_SETTINGS = "results/{dataset}/train_settings.json"  # an input of rule train_ticket


def stamp_train_settings(params: StudyParams, root: Path = Path(".")) -> list[str]:
    """Keep each dataset's `train_settings.json` (an input of every train_ticket job) such that Snakemake
    re-trains exactly the tickets made with other training or pruning params than now, even where it has
    no metadata (results copied with `cp -a` / `cp -r`, `dvc pull`, `dvc checkout`): each ticket's
    metrics.json records the fingerprint of the params that trained it (`settings_fingerprint`).

    When the file does not hold the current fingerprint it is rewritten: with the current time where some
    ticket on disk records another fingerprint (so those tickets, older than it, are trained again, and
    what is made from them), else with a time older than any result (nothing re-runs: the results are the
    current params', or predate the record). Returns one line per dataset whose tickets are re-trained."""
    lines = []
    for dataset in params.study.datasets:
        section = params.datasets.get(dataset)
        if section is None:
            continue
        current = settings_fingerprint(section.model, section.model_width, section.training, params.pruning)
        stamp = Path(root) / TRAIN_SETTINGS.format(dataset=dataset)
        text = json.dumps({SETTINGS_SHA: current}) + "\n"
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if stamp.read_text(encoding="utf-8") == text:
                continue
        stale = [
            t
            for t in params.study.tickets(dataset)
            if _recorded_settings(Path(root) / t.folder) not in (None, current)
        ]
        atomic_write_text(stamp, text)
        if stale:
            lines.append(
                f"{DatasetFiles(dataset).folder}: {len(stale)} trained ticket(s) were made with other training or "
                "pruning params than now (e.g. copied or pulled results): they are trained again, with what "
                "is made from them"
            )
        else:
            os.utime(stamp, ns=(0, 0))
    return lines


def _recorded_settings(folder: Path) -> str | None:
    """The settings fingerprint a ticket's metrics.json records (None: none there, or not readable)."""
    try:
        value = json.loads((folder / TICKET_FILES.metrics).read_text(encoding="utf-8")).get(SETTINGS_SHA)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
