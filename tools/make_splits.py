"""Make the split lists of a folder of Pascal VOC annotations and images (the classic port's voc_annotation step).

    python tools/make_splits.py --root VOCdevkit/MYDATA [--val 0.1] [--test 0.1] [--seed 0] [--force]

From ``Annotations/*.xml`` and ``JPEGImages/`` (``.jpg``, ``.jpeg``, ``.png``) it writes
``ImageSets/Main/train.txt``, ``val.txt``, ``trainval.txt`` and ``test.txt``: every id whose XML parses
and whose image decodes its header, shuffled with ``--seed`` and cut by the ``--val`` and ``--test``
fractions. Pairs that cannot be used are skipped and counted by kind. Existing lists are never
overwritten without ``--force``. Then train with ``data.root`` the folder's parent and
``data.train_splits=[MYDATA/train] data.val_splits=[MYDATA/val]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.console import one_line_errors  # noqa: E402
from utils.data.images import IMAGE_SUFFIXES, ImageReadError, find_image, probe_image  # noqa: E402
from utils.data.records import DataError  # noqa: E402

SPLITS = ("train", "val", "trainval", "test")


def usable_ids(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The ids with a parsing XML and a readable image, and the skipped ones by kind."""
    annotations, images = root / "Annotations", root / "JPEGImages"
    if not annotations.is_dir() or not images.is_dir():
        raise DataError(f"{root} needs Annotations/ (the XMLs) and JPEGImages/ (the images)")
    skipped: dict[str, list[str]] = {"no image": [], "unreadable image": [], "malformed XML": [], "no XML": []}
    ids = []
    xmls = sorted(annotations.glob("*.xml"))
    for xml in xmls:
        image = find_image(images, xml.stem)
        if image is None:
            skipped["no image"].append(xml.name)
            continue
        try:
            ET.parse(xml)
        except ET.ParseError:
            skipped["malformed XML"].append(xml.name)
            continue
        try:
            probe_image(image)
        except ImageReadError:
            skipped["unreadable image"].append(image.name)
            continue
        ids.append(xml.stem)
    with_xml = {xml.stem for xml in xmls}
    skipped["no XML"] = sorted(p.name for p in images.iterdir() if p.suffix in IMAGE_SUFFIXES and p.stem not in with_xml)
    return ids, skipped


def make_splits(root: str | Path, val: float = 0.1, test: float = 0.1, seed: int = 0, force: bool = False) -> dict:
    """Write the four lists under ``root/ImageSets/Main``; returns the counts and the skipped files."""
    root = Path(root)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise DataError(f"--val {val} and --test {test} must be fractions with room left for training")
    lists = root / "ImageSets" / "Main"
    existing = [lists / f"{s}.txt" for s in SPLITS if (lists / f"{s}.txt").exists()]
    if existing and not force:
        raise DataError(f"{', '.join(str(p) for p in existing)} exist; --force replaces them")
    ids, skipped = usable_ids(root)
    if not ids:
        raise DataError(f"no usable annotation and image pairs under {root}")
    random.Random(seed).shuffle(ids)
    n_test, n_val = round(len(ids) * test), round(len(ids) * val)
    parts = {"test": ids[:n_test], "val": ids[n_test:n_test + n_val], "train": ids[n_test + n_val:]}
    parts["trainval"] = parts["train"] + parts["val"]
    lists.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        (lists / f"{name}.txt").write_text("".join(f"{i}\n" for i in sorted(parts[name])))
    return {"root": str(root), **{name: len(parts[name]) for name in SPLITS},
            "skipped": {kind: files for kind, files in skipped.items() if files}}


@one_line_errors(DataError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the dataset folder, e.g. VOCdevkit/MYDATA")
    parser.add_argument("--val", type=float, default=0.1, help="fraction of the images for val.txt")
    parser.add_argument("--test", type=float, default=0.1, help="fraction of the images for test.txt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    parser.add_argument("--force", action="store_true", help="replace existing split lists")
    parser.add_argument("--json", metavar="PATH", help="also write the counts as JSON")
    args = parser.parse_args(argv)
    result = make_splits(args.root, args.val, args.test, args.seed, args.force)
    print(f"{result['root']}/ImageSets/Main: " + ", ".join(f"{s}.txt {result[s]}" for s in SPLITS))
    for kind, files in result["skipped"].items():
        print(f"skipped, {kind}: {len(files)} ({', '.join(files[:3])}{', ...' if len(files) > 3 else ''})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
