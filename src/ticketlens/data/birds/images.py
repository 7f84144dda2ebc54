"""Bird images in the CUB layout: decode, check each box against its image, crop and resize to squares."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ticketlens.data.birds.records import CubRecords, _fail
from ticketlens.errors import UserError

CROP_MARGIN = 0.1  # crop_to_box keeps this fraction of the box size around it (context for the model)
BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image (0- vs 1-based corner conventions)
PROGRESS_MIN_IMAGES = 500  # decoding fewer images than this shows no progress bar
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)  # what PIL raises for a bad file

T = TypeVar("T")


def _image_problem(records: CubRecords, index: int, err: BaseException) -> UserError:
    """One line naming the image's images.txt line and what is wrong with its file."""
    path = records.image_path(index)
    if not path.is_file():
        problem = "not found"
    elif path.stat().st_size == 0:
        problem = "is empty (0 bytes) (allowed: a complete image file that PIL can decode)"
    else:
        reason = " ".join(str(err).replace(str(path), path.name).split()) or type(err).__name__
        problem = f"cannot be decoded ({reason}) (allowed: a complete image file that PIL can decode)"
    return _fail(
        records.root / "images.txt",
        records.image_lines[index],
        f"image file images/{records.paths[index]} {problem}",
    )


@contextmanager
def _open_image(records: CubRecords, index: int) -> Iterator[Any]:
    """Image `index` opened with PIL; any failure to read it becomes `_image_problem`'s one line."""
    from PIL import Image

    try:
        with Image.open(records.image_path(index)) as image:
            yield image
    except (*IMAGE_ERRORS, Image.DecompressionBombError) as err:
        raise _image_problem(records, index, err) from None


def check_box(records: CubRecords, index: int, width: int, height: int) -> None:
    """Refuse a box that is empty or not inside its width x height image (it would silently become a
    clipped or zero-area box); up to BOX_TOLERANCE pixels past an edge are clipped."""
    x, y, w, h = (float(v) for v in records.boxes[index])
    tol = BOX_TOLERANCE
    if w > 0 and h > 0 and x >= -tol and y >= -tol and x + w <= width + tol and y + h <= height + tol:
        return
    raise _fail(
        records.root / "bounding_boxes.txt",
        records.box_lines[index],
        f"box x {x:g}, y {y:g}, width {w:g}, height {h:g} is not inside image images/{records.paths[index]} "
        f"of {width} x {height} pixels (allowed: width > 0, height > 0, 0 <= x, x + width <= {width}, "
        f"0 <= y, y + height <= {height}, {tol:g} pixel tolerance)",
    )


def check_image(records: CubRecords, index: int) -> None:
    """Open and fully decode image `index` and check its box against its size (`data check`)."""
    with _open_image(records, index) as image:
        image.load()
        check_box(records, index, *image.size)


def _map_images(records: CubRecords, work: Callable[[CubRecords, int], T], desc: str) -> Iterator[T]:
    """work(records, i) for every image in order, on threads (PIL releases the GIL while decoding), with a
    progress bar on stderr for a real-sized set; the first error cancels the images not yet started."""
    from tqdm import tqdm

    n = len(records.paths)
    pool = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)))
    try:
        quiet = n < PROGRESS_MIN_IMAGES
        with tqdm(total=n, desc=desc, unit="img", file=sys.stderr, mininterval=1.0, disable=quiet) as bar:
            for result in pool.map(lambda index: work(records, index), range(n)):
                bar.update()
                yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def crop_window(
    box: np.ndarray, width: int, height: int, crop_to_box: bool
) -> tuple[float, float, float, float]:
    """The region of the original image that becomes the prepared square (x0, y0, x1, y1)."""
    if not crop_to_box:
        return 0.0, 0.0, float(width), float(height)
    x, y, w, h = (float(v) for v in box)
    mx, my = CROP_MARGIN * w, CROP_MARGIN * h
    x0, y0 = max(0.0, x - mx), max(0.0, y - my)
    x1, y1 = min(float(width), x + w + mx), min(float(height), y + h + my)
    if x1 - x0 < 1 or y1 - y0 < 1:  # a degenerate box: fall back to the whole image
        return 0.0, 0.0, float(width), float(height)
    return x0, y0, x1, y1


def map_boxes_parts(
    box: np.ndarray, parts: np.ndarray, window: tuple[float, float, float, float], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Box and part locations in prepared pixels (the window is resized to size x size).

    Parts that fall outside a crop become invisible (0, 0, 0), as CUB marks unseen parts.
    """
    x0, y0, x1, y1 = window
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    bx0 = np.clip((box[0] - x0) * sx, 0, size)
    by0 = np.clip((box[1] - y0) * sy, 0, size)
    bx1 = np.clip((box[0] + box[2] - x0) * sx, 0, size)
    by1 = np.clip((box[1] + box[3] - y0) * sy, 0, size)
    new_box = np.array([bx0, by0, bx1 - bx0, by1 - by0], dtype=np.float32)
    new_parts = np.zeros_like(parts, dtype=np.float32)
    px, py = (parts[:, 0] - x0) * sx, (parts[:, 1] - y0) * sy
    keep = (parts[:, 2] > 0) & (px >= 0) & (px <= size) & (py >= 0) & (py <= size)
    new_parts[keep, 0], new_parts[keep, 1], new_parts[keep, 2] = px[keep], py[keep], 1.0
    return new_box, new_parts


def load_square(
    path: Path, box: np.ndarray, size: int, crop_to_box: bool, mode: str = "RGB"
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Open an image as `mode` (RGB: grayscale, CMYK, palette... converted), crop, resize to a square.

    Returns the H x W (x C) uint8 array and the window in original pixels. The aspect ratio is not
    kept (the whole bird stays in view and coordinates map linearly).
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return _square(image, box, size, crop_to_box, mode)
    except IMAGE_ERRORS as err:
        raise UserError(f"{path}: cannot read image ({err})") from None


def _square(
    image: Any, box: np.ndarray, size: int, crop_to_box: bool, mode: str
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """`load_square` on an opened PIL image (decodes it)."""
    from PIL import Image

    resample = Image.Resampling.NEAREST if mode == "L" else Image.Resampling.BILINEAR
    width, height = image.size
    window = crop_window(box, width, height, crop_to_box)
    if mode == "RGB" and image.format == "JPEG":
        # decode at a reduced DCT scale when the target is small: several times faster
        want = (
            int(width * size / (window[2] - window[0])),
            int(height * size / (window[3] - window[1])),
        )
        image.draft(image.mode, want)
    scale_x, scale_y = image.size[0] / width, image.size[1] / height
    scaled = (window[0] * scale_x, window[1] * scale_y, window[2] * scale_x, window[3] * scale_y)
    converted = image.convert(mode)
    square = converted.resize((size, size), resample=resample, box=scaled)
    return np.asarray(square, dtype=np.uint8), window


@dataclass
class BirdArrays:
    """The prepared tensors shared by CUB and the synthetic birds (before torch)."""

    images: np.ndarray  # uint8 N x 3 x S x S
    boxes: np.ndarray  # float32 N x 4
    part_locs: np.ndarray  # float32 N x P x 3


def load_bird_images(records: CubRecords, size: int, crop_to_box: bool) -> BirdArrays:
    """Decode, crop and resize every image, with the checks of `data check` (`check_box`, and a file
    that does not decode is named by its images.txt line)."""
    n = len(records.paths)
    images = np.zeros((n, 3, size, size), dtype=np.uint8)
    boxes = np.zeros((n, 4), dtype=np.float32)
    part_locs = np.zeros_like(records.part_locs)

    def work(records: CubRecords, index: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        with _open_image(records, index) as image:
            check_box(records, index, *image.size)
            return _square(image, records.boxes[index], size, crop_to_box, "RGB")

    for index, (array, window) in enumerate(_map_images(records, work, "loading images")):
        images[index] = array.transpose(2, 0, 1)
        boxes[index], part_locs[index] = map_boxes_parts(
            records.boxes[index], records.part_locs[index], window, size
        )
    return BirdArrays(images, boxes, part_locs)
