"""CUB-200-2011 layout: read the standard folder's text files exactly (quirks included).

Layout and quirks: ids are 1-based; names and paths may contain spaces (the last field is "the rest of
the line"); `attributes.txt` sits inside the folder or in its parent; some attribute-label lines carry
extra fields (we read the first four); some images are grayscale or CMYK (converted to RGB, `images`).
Every problem with the user's copy becomes a one-line UserError naming the file and, where there is
one, the line. The synthetic birds are written in the same layout and read through this package
(`records` the text files, `images` decoding and cropping, `prepare` data.pt and meta.csv, `check` the
`data check` command).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ticketlens.errors import UserError

CERTAINTY_NAMES = ("not visible", "guessing", "probably", "definitely")  # certainty 1..4


@dataclass
class CubRecords:
    """Everything the CUB text files say, one row per image in image-id order.

    Coordinates are pixels of the original images; `labels` are 0-based class indices.
    """

    root: Path
    image_ids: np.ndarray  # int64 N, the 1-based ids of images.txt
    paths: list[str]  # relative to root/images
    labels: np.ndarray  # int64 N
    class_folders: list[str]  # classes.txt names, e.g. "001.Black_footed_Albatross"
    is_train: np.ndarray  # bool N
    boxes: np.ndarray  # float32 N x 4 (x, y, w, h)
    part_names: list[str]
    part_locs: np.ndarray  # float32 N x P x 3 (x, y, visible)
    attribute_names: list[str]
    attributes: np.ndarray  # uint8 N x A (is_present)
    certainty: np.ndarray  # uint8 N x A (1-4)
    attributes_file: Path
    certainty_names: list[str] = field(default_factory=lambda: list(CERTAINTY_NAMES))
    class_attributes: np.ndarray | None = None  # float32 C x A (0-100), when the file is there
    image_lines: list[int] = field(default_factory=list)  # images.txt line of each image (messages)
    box_lines: list[int] = field(default_factory=list)  # bounding_boxes.txt line of each image

    @property
    def class_names(self) -> list[str]:
        return [display_class_name(name) for name in self.class_folders]

    def image_path(self, index: int) -> Path:
        return self.root / "images" / self.paths[index]


def display_class_name(folder: str) -> str:
    """'001.Black_footed_Albatross' -> 'Black footed Albatross'."""
    head, dot, rest = folder.partition(".")
    name = rest if dot and head.isdigit() else folder
    return name.replace("_", " ")


# ---------------------------------------------------------------------------------------- text files


def _fail(path: Path, lineno: int | None, message: str) -> UserError:
    where = f"{path}: line {lineno}: " if lineno else f"{path}: "
    return UserError(where + message)


def _show(line: str) -> str:
    line = line.rstrip("\n")
    return repr(line if len(line) <= 60 else line[:57] + "...")


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of the non-blank lines; a missing file is a UserError."""
    if not path.is_file():
        raise _fail(path, None, "missing (is this a CUB_200_2011 folder?)")
    try:
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    yield lineno, line
    except UnicodeDecodeError as err:
        raise _fail(path, None, f"not a text file ({err.reason})") from None


def _parse_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(text)
    return value


def read_rows(
    path: Path,
    fmt: str,
    converters: Sequence[Callable[[str], Any]],
    rest: bool = False,
    extra_ok: bool = False,
) -> list[tuple[int, list[Any]]]:
    """Parse a whitespace-separated file into (line number, converted fields).

    `rest`: the last field is the remainder of the line (names and paths with spaces).
    `extra_ok`: ignore fields after the expected ones (image_attribute_labels.txt quirk).
    """
    n = len(converters)
    rows: list[tuple[int, list[Any]]] = []
    for lineno, line in _iter_lines(path):
        fields = line.split(maxsplit=n - 1) if rest else line.split()
        if len(fields) < n or (len(fields) > n and not (rest or extra_ok)):
            raise _fail(path, lineno, f"expected '{fmt}', got {_show(line)}")
        try:
            rows.append(
                (lineno, [convert(text.strip()) for convert, text in zip(converters, fields, strict=False)])
            )
        except ValueError:
            raise _fail(path, lineno, f"expected '{fmt}', got {_show(line)}") from None
    if not rows:
        raise _fail(path, None, "is empty")
    return rows


def _numbered_names(path: Path, what: str) -> list[str]:
    """`<id> <name>` files (classes, parts, attributes, certainties): ids must run 1..K in order."""
    rows = read_rows(path, f"<{what}_id> <name>", [int, str], rest=True)
    for position, (lineno, (ident, _)) in enumerate(rows, start=1):
        if ident != position:
            raise _fail(path, lineno, f"expected {what} id {position} (ids run 1..K in order), got {ident}")
    return [name for _, (_, name) in rows]


def _per_image(
    path: Path, fmt: str, converters: Sequence[Callable[[str], Any]], row_of: dict[int, int]
) -> tuple[list[list[Any]], list[int]]:
    """Files with one line per image (`<image_id> ...`): every image exactly once, in any order.

    Returns each image's fields after the id and the line they came from.
    """
    rows = read_rows(path, fmt, converters)
    values: list[list[Any] | None] = [None] * len(row_of)
    linenos = [0] * len(row_of)
    for lineno, fields in rows:
        image_id = fields[0]
        if image_id not in row_of:
            raise _fail(path, lineno, f"unknown image id {image_id} (not in images.txt)")
        if values[row_of[image_id]] is not None:
            raise _fail(path, lineno, f"duplicate line for image id {image_id}")
        values[row_of[image_id]] = fields[1:]
        linenos[row_of[image_id]] = lineno
    missing = [image_id for image_id, row in row_of.items() if values[row] is None]
    if missing:
        raise _fail(path, None, f"no line for image id {missing[0]} ({len(missing)} images missing)")
    return values, linenos  # type: ignore[return-value]


def _find_attributes_file(root: Path) -> Path:
    """The official archive keeps attributes.txt beside CUB_200_2011/, some copies inside it."""
    candidates = [
        root / "attributes.txt",
        root.parent / "attributes.txt",
        root / "attributes" / "attributes.txt",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"{root / 'attributes.txt'}: missing (looked inside the folder, in its parent and in attributes/)"
    )


def _read_images(root: Path) -> tuple[np.ndarray, list[str], dict[int, int], list[int]]:
    path = root / "images.txt"
    rows = read_rows(path, "<image_id> <class_folder/file.jpg>", [int, str], rest=True)
    rows.sort(key=lambda row: row[1][0])
    row_of: dict[int, int] = {}
    for lineno, (image_id, _) in rows:
        if image_id < 1:
            raise _fail(path, lineno, f"image ids are 1-based, got {image_id}")
        if image_id in row_of:
            raise _fail(path, lineno, f"duplicate image id {image_id}")
        row_of[image_id] = len(row_of)
    ids = np.array([image_id for _, (image_id, _) in rows], dtype=np.int64)
    return ids, [rel for _, (_, rel) in rows], row_of, [lineno for lineno, _ in rows]


def _read_part_locs(root: Path, row_of: dict[int, int], n_parts: int) -> np.ndarray:
    path = root / "parts" / "part_locs.txt"
    fmt = "<image_id> <part_id> <x> <y> <visible 0|1>"
    locs = np.zeros((len(row_of), n_parts, 3), dtype=np.float32)
    seen = np.zeros((len(row_of), n_parts), dtype=bool)
    for lineno, (image_id, part_id, x, y, visible) in read_rows(
        path, fmt, [int, int, _parse_float, _parse_float, int]
    ):
        if image_id not in row_of:
            raise _fail(path, lineno, f"unknown image id {image_id} (not in images.txt)")
        if not 1 <= part_id <= n_parts or visible not in (0, 1):
            raise _fail(
                path, lineno, f"part id must be 1..{n_parts} and visible 0 or 1, got {part_id}, {visible}"
            )
        row = row_of[image_id]
        if seen[row, part_id - 1]:
            raise _fail(path, lineno, f"duplicate line for image {image_id} part {part_id}")
        seen[row, part_id - 1] = True
        locs[row, part_id - 1] = (x, y, visible)
    if not seen.all():
        row, part = np.argwhere(~seen)[0]
        ids = list(row_of)
        raise _fail(path, None, f"no line for image id {ids[row]} part {part + 1}")
    return locs


def _attribute_table_fast(path: Path) -> np.ndarray | None:
    """The 3.7M-line label file through pandas' C parser; None when anything looks off (the slow
    line-by-line parser then finds and names the bad line)."""
    import pandas as pd

    try:
        # names wider than any sane line lets the C parser take ragged rows (extra fields -> NaN
        # columns we drop); float32 holds every id and flag exactly and halves the transient memory
        frame = pd.read_csv(path, sep=r"\s+", header=None, names=range(8), engine="c", dtype=np.float32)
    except Exception:  # more than 8 fields, non-numeric text, ...: let the slow path explain
        return None
    table = frame.to_numpy()[:, :4]
    if len(table) == 0 or np.isnan(table).any() or (table != np.round(table)).any():
        return None
    return table.astype(np.int64)


def _read_attribute_labels(
    root: Path, row_of: dict[int, int], n_attributes: int
) -> tuple[np.ndarray, np.ndarray]:
    path = root / "attributes" / "image_attribute_labels.txt"
    if not path.is_file():
        raise _fail(path, None, "missing (is this a CUB_200_2011 folder?)")
    table = _attribute_table_fast(path)
    if table is None:
        fmt = "<image_id> <attribute_id> <is_present 0|1> <certainty 1-4> [<time>]"
        rows = read_rows(path, fmt, [int] * 4, extra_ok=True)
        table = np.array([fields for _, fields in rows], dtype=np.int64)
        linenos = np.array([lineno for lineno, _ in rows])
    else:
        linenos = None  # blank lines are rare; line numbers are recomputed by the slow path on error

    def bad(mask: np.ndarray, message: str) -> None:
        if mask.any():
            first = int(np.argmax(mask))
            lineno = int(linenos[first]) if linenos is not None else _lineno_of_row(path, first)
            raise _fail(path, lineno, message.format(*table[first]))

    lookup = np.full(int(max(table[:, 0].max(), max(row_of))) + 1, -1, dtype=np.int64)
    lookup[list(row_of)] = list(row_of.values())
    ids = np.clip(table[:, 0], 0, len(lookup) - 1)
    rows_ = np.where(table[:, 0] >= 1, lookup[ids], -1)
    bad(rows_ < 0, "unknown image id {0} (not in images.txt)")
    bad(
        (table[:, 1] < 1) | (table[:, 1] > n_attributes), f"attribute id {{1}} out of range 1..{n_attributes}"
    )
    bad((table[:, 2] != 0) & (table[:, 2] != 1), "is_present must be 0 or 1, got {2}")
    bad((table[:, 3] < 1) | (table[:, 3] > 4), "certainty must be 1-4, got {3}")
    flat = rows_ * n_attributes + table[:, 1] - 1
    counts = np.bincount(flat, minlength=len(row_of) * n_attributes)
    first_seen = np.zeros(len(flat), dtype=bool)
    first_seen[np.unique(flat, return_index=True)[1]] = True
    bad(~first_seen, "duplicate line for image {0} attribute {1}")
    if (counts == 0).any():
        row, attribute = divmod(int(np.argmax(counts == 0)), n_attributes)
        raise _fail(
            path,
            None,
            f"no line for image id {list(row_of)[row]} attribute {attribute + 1} "
            f"({int((counts == 0).sum())} of {counts.size} image-attribute pairs missing: truncated file?)",
        )
    attributes = np.zeros(len(row_of) * n_attributes, dtype=np.uint8)
    certainty = np.zeros(len(row_of) * n_attributes, dtype=np.uint8)
    attributes[flat] = table[:, 2]
    certainty[flat] = table[:, 3]
    shape = (len(row_of), n_attributes)
    return attributes.reshape(shape), certainty.reshape(shape)


def _lineno_of_row(path: Path, row: int) -> int:
    for position, (lineno, _) in enumerate(_iter_lines(path)):
        if position == row:
            return lineno
    return 0


def _read_class_attributes(root: Path, n_classes: int, n_attributes: int) -> np.ndarray | None:
    path = root / "attributes" / "class_attribute_labels_continuous.txt"
    if not path.is_file():
        return None  # optional: nothing here needs it, it is only reported
    values = []
    for lineno, line in _iter_lines(path):
        fields = line.split()
        try:
            row = [_parse_float(text) for text in fields]
        except ValueError:
            raise _fail(path, lineno, f"expected {n_attributes} numbers 0-100, got {_show(line)}") from None
        if len(row) != n_attributes:
            raise _fail(path, lineno, f"expected {n_attributes} numbers (one per attribute), got {len(row)}")
        values.append(row)
    if len(values) != n_classes:
        raise _fail(path, None, f"expected {n_classes} rows (one per class), got {len(values)}")
    return np.asarray(values, dtype=np.float32)


def _resolve_root(root: Path) -> Path:
    """Accept the folder that holds CUB_200_2011/ as well (the archive's top level)."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: no such folder (point datasets.cub.root at your CUB_200_2011 copy)")
    if not (root / "images.txt").exists() and (root / "CUB_200_2011" / "images.txt").exists():
        return root / "CUB_200_2011"
    return root


def read_cub(root: Path) -> CubRecords:
    """Read and cross-check every text file of a CUB_200_2011 folder (images are not opened)."""
    root = _resolve_root(root)
    ids, paths, row_of, image_lines = _read_images(root)
    class_folders = _numbered_names(root / "classes.txt", "class")
    labels_path = root / "image_class_labels.txt"
    labels = np.array(
        [v[0] for v in _per_image(labels_path, "<image_id> <class_id>", [int, int], row_of)[0]],
        dtype=np.int64,
    )
    if labels.min() < 1 or labels.max() > len(class_folders):
        bad_id = int(ids[np.argmax((labels < 1) | (labels > len(class_folders)))])
        raise _fail(labels_path, None, f"image {bad_id}: class id out of range 1..{len(class_folders)}")
    split_path = root / "train_test_split.txt"
    is_train = np.array(
        [v[0] for v in _per_image(split_path, "<image_id> <1 train | 0 test>", [int, int], row_of)[0]]
    )
    if not np.isin(is_train, (0, 1)).all():
        raise _fail(
            split_path, None, f"image {int(ids[np.argmax(~np.isin(is_train, (0, 1)))])}: split must be 0 or 1"
        )
    for flag, name in ((1, "train"), (0, "test")):
        if not (is_train == flag).any():
            raise _fail(
                split_path,
                None,
                f"no image is marked {flag} ({name}): the {name} split would be empty "
                "(allowed: at least one 1 and one 0)",
            )
    box_values, box_lines = _per_image(
        root / "bounding_boxes.txt", "<image_id> <x> <y> <width> <height>", [int] + [_parse_float] * 4, row_of
    )
    part_names = _numbered_names(root / "parts" / "parts.txt", "part")
    part_locs = _read_part_locs(root, row_of, len(part_names))
    attributes_file = _find_attributes_file(root)
    attribute_names = _numbered_names(attributes_file, "attribute")
    attributes, certainty = _read_attribute_labels(root, row_of, len(attribute_names))
    certainties_path = root / "attributes" / "certainties.txt"
    certainty_names = (
        _numbered_names(certainties_path, "certainty")
        if certainties_path.is_file()
        else list(CERTAINTY_NAMES)
    )
    return CubRecords(
        root=root,
        image_ids=ids,
        paths=paths,
        labels=labels - 1,
        class_folders=class_folders,
        is_train=is_train.astype(bool),
        boxes=np.array(box_values, dtype=np.float32),
        part_names=part_names,
        part_locs=part_locs,
        attribute_names=attribute_names,
        attributes=attributes,
        certainty=certainty,
        attributes_file=attributes_file,
        certainty_names=certainty_names,
        class_attributes=_read_class_attributes(root, len(class_folders), len(attribute_names)),
        image_lines=image_lines,
        box_lines=box_lines,
    )
