"""A ticket's tables read with the columns and the rows they must have, or refused in one line.

A table cut short (a copy interrupted, a full disk, an edit) still parses: without these checks the summary
took its remaining rows as the whole table, and the report read n/a cells and "3 of 38 maps". The ticket
knows what its tables hold: saliency.npz records its probe images, its map methods and (the logits' width)
its classes, and its round says which references its maps were compared with. So

* saliency.csv has one row per probe image x method,
* consistency.csv one row per probe image x method x reference,
* every TCAV table (tcav/{concept}.csv, tcav/calibration.csv) one row per concept x layer x class, over the
  same layers in all of the ticket's tables and every class.

A table that fails is named with what it lacks and the command that re-makes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ticketlens.errors import UserError
from ticketlens.fileio import load_npz
from ticketlens.study import METHOD_NAMES, SIMILARITY_METRICS, Ticket

SALIENCY_KEYS = ("probe", "method")
SALIENCY_REQUIRED = (*SALIENCY_KEYS, "label", "pred", "correct", "empty")
CONSISTENCY_KEYS = ("probe", "method", "reference")
CONSISTENCY_REQUIRED = (*CONSISTENCY_KEYS, *SIMILARITY_METRICS)
TCAV_KEYS = ("concept", "layer", "target_class")
TCAV_REQUIRED = (*TCAV_KEYS, "mean", "null_mean", "effect", "p_value", "side", "cav_accuracy", "p_learnable")
REMAKE = "delete it and re-run snakemake (the rule that wrote it makes it again)"


@dataclass(frozen=True)
class TicketShape:
    """What one ticket's tables must cover, from its saliency.npz and its place in the study."""

    probes: tuple[int, ...]
    methods: tuple[str, ...]
    n_classes: int
    references: tuple[str, ...]


def ticket_shape(ticket: Ticket, saliency_maps: Path) -> TicketShape:
    npz = load_npz(saliency_maps, "saliency maps", ("probe", "logits", *METHOD_NAMES))
    missing = [key for key in ("probe", "logits") if key not in npz]
    if missing:
        raise UserError(f"saliency maps {saliency_maps} lack {', '.join(missing)}: {REMAKE}")
    references = ("random",) if ticket.previous is None else ("dense", "previous", "random")
    return TicketShape(
        probes=tuple(int(p) for p in npz["probe"]),
        methods=tuple(m for m in METHOD_NAMES if m in npz),
        n_classes=int(npz["logits"].shape[-1]),
        references=references,
    )


def read_table(path: Path, what: str, columns: Sequence[str]) -> pd.DataFrame:
    """A csv with at least `columns`; missing, empty, unparseable or short of a column: one UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found (run the explain / tcav steps for this ticket first)")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"{what} {path} is empty: {REMAKE}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{what} {path} is unreadable ({str(err).splitlines()[0]}): {REMAKE}") from None
    lacking = [c for c in columns if c not in frame.columns]
    if lacking:
        raise UserError(f"{what} {path} lacks the column(s) {', '.join(lacking)}: {REMAKE}")
    return frame


def _check_rows(
    frame: pd.DataFrame, path: Path, what: str, keys: Sequence[str], expected: set[tuple]
) -> None:
    """Exactly one row per expected key tuple (a cut table has fewer, a doubled one more)."""
    found = [tuple(_plain(v) for v in row) for row in frame[list(keys)].itertuples(index=False, name=None)]
    per = " x ".join(keys)
    if len(found) != len(expected):
        raise UserError(
            f"{what} {path} has {len(found)} rows, expected {len(expected)} (one per {per}): it is cut short "
            f"or doubled; {REMAKE}"
        )
    if set(found) != expected:
        odd = sorted(set(found) - expected, key=str)[0]
        raise UserError(
            f"{what} {path} has rows of another ticket or run (e.g. {per} {odd}, which its saliency.npz and "
            f"tables do not have); {REMAKE}"
        )


def _plain(value: object) -> object:
    """Numbers as ints where whole (a probe read as 140.0 next to a NaN is probe 140), text as text."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value.item() if hasattr(value, "item") else value


def _grid(*axes: Iterable[object]) -> set[tuple]:
    out: set[tuple] = {()}
    for axis in axes:
        out = {(*prefix, value) for prefix in out for value in axis}
    return out


def read_saliency_table(path: Path, shape: TicketShape) -> pd.DataFrame:
    frame = read_table(path, "saliency table", SALIENCY_REQUIRED)
    _check_rows(frame, Path(path), "saliency table", SALIENCY_KEYS, _grid(shape.probes, shape.methods))
    return frame


def read_consistency_table(path: Path, shape: TicketShape) -> pd.DataFrame:
    frame = read_table(path, "consistency table", CONSISTENCY_REQUIRED)
    expected = _grid(shape.probes, shape.methods, shape.references)
    _check_rows(frame, Path(path), "consistency table", CONSISTENCY_KEYS, expected)
    return frame


def read_tcav_tables(
    concept_paths: Sequence[Path], calibration_path: Path, shape: TicketShape
) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """A ticket's TCAV tables (one per concept, and its calibration table), each covering every layer that
    any of them has x every class, once per concept it holds. Only the calibration table may have no rows
    (explanations.tcav.n_calibration_sets 0)."""
    frames = [read_table(path, "TCAV table", TCAV_REQUIRED) for path in (*concept_paths, calibration_path)]
    layers = sorted({str(layer) for frame in frames for layer in frame["layer"].dropna()})
    for index, (path, frame) in enumerate(zip((*concept_paths, calibration_path), frames, strict=True)):
        if index == len(concept_paths) and frame.empty:
            continue
        concepts = sorted({str(c) for c in frame["concept"].dropna()}) or ["(none)"]
        expected = _grid(concepts, layers, range(shape.n_classes))
        typed = frame.astype({"concept": str, "layer": str})
        _check_rows(typed, Path(path), "TCAV table", TCAV_KEYS, expected)
    return frames[:-1], frames[-1]
