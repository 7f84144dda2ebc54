"""Write tests/data/tiny_cub: a 9-image CUB_200_2011 copy with every quirk the reader must handle.

Quirks: attributes.txt in the PARENT folder (as in the official archive), a class name and an image
path with spaces, attribute-label lines with extra fields, a grayscale and a CMYK JPEG, lines out of
id order, 1-based ids, an invisible part (0.0 0.0 0). Run once; the output is committed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent / "tiny_cub"
ROOT = HERE / "CUB_200_2011"
CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty Albatross"]
PARTS = [
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left eye",
    "left leg",
    "left wing",
    "nape",
    "right eye",
    "right leg",
    "right wing",
    "tail",
    "throat",
]
ATTRIBUTES = [
    "has_bill_shape::hooked_seabird",
    "has_wing_color::blue",
    "has_wing_color::brown",
    "has_breast_pattern::striped",
    "has_breast_pattern::solid",
    "has_crown_color::black",
]
# image id -> (class id, file, is_train, mode, size, box)
IMAGES = {
    1: (
        1,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0001.jpg",
        1,
        "RGB",
        (48, 36),
        (4.0, 6.0, 30.0, 20.0),
    ),
    2: (
        1,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0002.jpg",
        0,
        "L",
        (40, 40),
        (10.0, 10.0, 20.0, 20.0),
    ),
    3: (2, "002.Laysan_Albatross/Laysan_Albatross_0001.jpg", 1, "RGB", (36, 48), (2.0, 8.0, 30.0, 30.0)),
    4: (2, "002.Laysan_Albatross/Laysan_Albatross_0002.jpg", 0, "CMYK", (40, 30), (5.5, 5.5, 20.0, 15.0)),
    5: (3, "003.Sooty Albatross/Sooty Albatross 0001.jpg", 1, "RGB", (50, 40), (0.0, 0.0, 50.0, 40.0)),
    6: (3, "003.Sooty Albatross/Sooty Albatross 0002.jpg", 0, "RGB", (32, 32), (8.0, 4.0, 16.0, 24.0)),
    # a second training image per class: enough to carve a validation image per class (fraction 0.5)
    7: (
        1,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0003.jpg",
        1,
        "RGB",
        (44, 36),
        (6.0, 5.0, 28.0, 24.0),
    ),
    8: (2, "002.Laysan_Albatross/Laysan_Albatross_0003.jpg", 1, "RGB", (40, 44), (3.0, 9.0, 30.0, 28.0)),
    9: (3, "003.Sooty Albatross/Sooty Albatross 0003.jpg", 1, "RGB", (36, 36), (2.0, 3.0, 30.0, 30.0)),
}
PRESENT = {  # image id -> attribute ids present
    1: {1, 3, 5},
    2: {1, 3, 5, 6},
    3: {2, 4},
    4: {2, 4, 6},
    5: {3, 5, 6},
    6: {3, 4},
    7: {1, 3},
    8: {2, 4, 5},
    9: {3, 6},
}
COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 200)]


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    shutil.rmtree(HERE, ignore_errors=True)
    order = [3, 1, 2, 6, 4, 5, 7, 8, 9]  # ids out of order: the reader must sort by id, not trust line order
    write(ROOT / "images.txt", [f"{i} {IMAGES[i][1]}" for i in order])
    write(ROOT / "classes.txt", [f"{k} {name}" for k, name in enumerate(CLASSES, start=1)])
    write(ROOT / "image_class_labels.txt", [f"{i} {IMAGES[i][0]}" for i in order])
    write(ROOT / "train_test_split.txt", [f"{i} {IMAGES[i][2]}" for i in sorted(IMAGES)])
    write(
        ROOT / "bounding_boxes.txt", [f"{i} {' '.join(str(v) for v in IMAGES[i][5])}" for i in sorted(IMAGES)]
    )
    write(ROOT / "parts" / "parts.txt", [f"{k} {name}" for k, name in enumerate(PARTS, start=1)])
    locs = []
    for i, (_, _, _, _, _, (x, y, w, h)) in sorted(IMAGES.items()):
        for k in range(1, len(PARTS) + 1):
            if k == 7:  # left eye hidden in side view
                locs.append(f"{i} {k} 0.0 0.0 0")
            else:
                locs.append(f"{i} {k} {x + w * k / 16:.1f} {y + h / 2:.1f} 1")
    write(ROOT / "parts" / "part_locs.txt", locs)
    write(HERE / "attributes.txt", [f"{k} {name}" for k, name in enumerate(ATTRIBUTES, start=1)])
    labels = []
    for i in sorted(IMAGES):
        for a in range(1, len(ATTRIBUTES) + 1):
            present = int(a in PRESENT[i])
            certainty = 4 if present else (1 if a == 6 else 3)
            if i == 2 and a == 2:
                certainty = 2  # a guess
            extra = " 0" if (i + a) % 5 == 0 else ""  # the quirk: some lines carry an extra field
            labels.append(f"{i} {a} {present} {certainty} {1.5 * a:.3f}{extra}")
    write(ROOT / "attributes" / "image_attribute_labels.txt", labels)
    write(
        ROOT / "attributes" / "certainties.txt", ["1 not visible", "2 guessing", "3 probably", "4 definitely"]
    )
    continuous = []
    for c in range(1, len(CLASSES) + 1):
        members = [i for i in IMAGES if IMAGES[i][0] == c]
        row = [
            100.0 * sum(a in PRESENT[i] for i in members) / len(members)
            for a in range(1, len(ATTRIBUTES) + 1)
        ]
        continuous.append(" ".join(f"{v:.6f}" for v in row))
    write(ROOT / "attributes" / "class_attribute_labels_continuous.txt", continuous)
    for label, rel, _, mode, size, (x, y, w, h) in IMAGES.values():
        image = Image.new("RGB", size, (210, 220, 230))
        ImageDraw.Draw(image).rectangle([x, y, x + w - 1, y + h - 1], fill=COLOURS[label - 1])
        path = ROOT / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.convert(mode).save(path, format="JPEG", quality=95)


if __name__ == "__main__":
    main()
