"""File writes and reads shared by every stage.

Writes go through a temporary file in the target's folder and `os.replace`, so a killed job never leaves
a half-written target behind (Snakemake would otherwise take it for done). Torch files are read with
`weights_only=True`, and a missing or unreadable one becomes a one-line UserError. Torch is imported
lazily: this module is also used by steps that never need it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ticketlens.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then move it into place.

    A write the file system refuses (disk full, read-only or foreign-owned results) is one UserError naming
    `path` (not the temporary file), and nothing is left behind.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are meant to be shared
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"{path}: cannot write ({_reason(err, path)}){_WRITE_HINT}") from None
    except RuntimeError as err:
        # torch's zip writer turns a failed write into RuntimeError("... inline_container.cc ...")
        if "inline_container" not in str(err) and "write" not in str(err):
            raise
        raise UserError(f"{path}: cannot write ({_first_line(err)}){_WRITE_HINT}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


_WRITE_HINT = "; free disk space or make the results folder writable, then re-run"


def _reason(err: OSError, path: Path) -> str:
    """The OS's reason, with the file it names unless that is our own temporary file."""
    named = str(err.filename or "")
    where = f" at {named}" if named and not Path(named).name.startswith(f".{path.name}.") else ""
    return f"{err.strerror or type(err).__name__}{where}"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _open_for_writing(path: Path) -> Any:
    return open(path, "wb")  # one place to open files for writing (tests swap it for /dev/full)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save, atomically and byte-reproducibly."""
    import torch

    def write(tmp: Path) -> None:
        # Through a file handle: given a path, torch names the zip archive inside after the (random)
        # temporary file, so identical tensors would give different bytes and DVC hashes.
        with _open_for_writing(tmp) as handle:
            torch.save(obj, handle)

    atomic_write(path, write)


def write_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    def write(tmp: Path) -> None:
        # a file object, because np.savez appends ".npz" to names that lack it
        with _open_for_writing(tmp) as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)


def load_npz(path: Path, what: str, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz file (only `keys`, where present, if given), read without unpickling: a
    missing, truncated or foreign file, or one holding object arrays, is one UserError naming it."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} not found")
    try:
        if not zipfile.is_zipfile(path):
            raise UserError(f"{what} {path} is not an .npz archive: delete it and re-run")
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files if keys is None or key in keys}
    except ValueError as err:
        if "allow_pickle" in str(err):
            problem = (
                "holds an object array (allowed: numeric and text arrays; it was not written by ticketlens)"
            )
        else:
            problem = f"is unreadable ({_first_line(err)})"
        raise UserError(f"{what} {path} {problem}: delete it and re-run") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{what} {path} is unreadable ({type(err).__name__}): delete it and re-run") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        with _open_for_writing(tmp) as handle:
            handle.write(text.encode("utf-8"))

    atomic_write(path, write)


def write_csv(frame: Any, path: Path, **to_csv: Any) -> None:
    """A pandas DataFrame as CSV without the index, atomically."""
    atomic_write_text(path, frame.to_csv(index=False, **to_csv))


def clean_json(value: Any) -> Any:
    """Make a value JSON-safe: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def write_json(value: Any, path: Path, sort_keys: bool = False) -> None:
    text = json.dumps(clean_json(value), indent=2, sort_keys=sort_keys, allow_nan=False)
    atomic_write_text(path, text + "\n")


def load_torch(path: Path, what: str, missing_hint: str = "") -> Any:
    """torch.load(weights_only=True) with one-line errors naming the file and what to do."""
    import torch

    try:
        from ticketlens.device import HOST  # lazy: it imports torch; fileio loads at Snakefile start-up

        return torch.load(path, weights_only=True, map_location=HOST)  # GPU-written files load anywhere
    except FileNotFoundError:
        hint = f" ({missing_hint})" if missing_hint else ""
        raise UserError(f"{what} {path} not found{hint}") from None
    except Exception as err:  # truncated, foreign or tampered files
        raise UserError(f"{what} {path} is unreadable ({type(err).__name__}): delete it and re-run") from None
