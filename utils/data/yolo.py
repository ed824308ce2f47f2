"""Ultralytics-style YOLO datasets: a ``data.yaml`` and a ``labels/*.txt`` per image, read into records.

``data.root`` names the ``data.yaml`` (or the folder that holds it)::

    path: .                  # the dataset folder, relative to this file (default: the file's folder)
    train: images/train      # a split: a folder of images, a .txt list of image paths, or a list of those
    val: images/val
    names: [cat, dog]        # or {0: cat, 1: dog}

and a split entry of the config (``data.train_splits: [train]``) is a key of that file. Each image's
labels are in the ``labels`` folder beside its ``images`` folder (``images/train/a.jpg`` ->
``labels/train/a.txt``), a line ``class cx cy w h`` per object in fractions of the image's width and
height; an image without a label file has no objects. Problems are reported as for VOC.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from utils.data.images import IMAGE_SUFFIXES, ImageReadError, probe_image
from utils.data.records import (
    BAD_COORDS,
    UNKNOWN_CLASS,
    UNREADABLE_IMAGE,
    DataError,
    DataReport,
    Record,
    clip_box,
)


def read_data_yaml(root: str | Path) -> tuple[Path, dict]:
    """(the dataset folder, the parsed data.yaml) of ``root``: a data.yaml, or a folder holding one."""
    path = Path(root)
    if path.is_dir():
        path = path / "data.yaml"
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"data.root = {root}: cannot read the YOLO data.yaml ({e})") from None
    if not isinstance(spec, dict) or "names" not in spec:
        raise DataError(f"{path}: a YOLO data.yaml needs at least 'names' and the split keys (train, val)")
    return (path.parent / str(spec.get("path") or ".")).resolve(), spec


def _names(spec: dict) -> list[str]:
    names = spec["names"]
    return [str(names[k]) for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]


def split_images(base: Path, entry) -> list[Path]:
    """The images of a split entry: a folder (searched recursively), a .txt list of paths, or a list of those."""
    if isinstance(entry, list):
        return [p for item in entry for p in split_images(base, item)]
    path = base / str(entry)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in IMAGE_SUFFIXES)
    if path.suffix == ".txt" and path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [(base / line) if not Path(line).is_absolute() else Path(line) for line in lines]
    raise DataError(f"YOLO split '{entry}': {path} is neither a folder of images nor a .txt list")


def label_path(image: Path) -> Path:
    """``.../images/<sub>/a.jpg`` -> ``.../labels/<sub>/a.txt`` (the last ``images`` folder of the path)."""
    parts = list(image.parts)
    last = max((i for i, part in enumerate(parts[:-1]) if part == "images"), default=None)
    if last is None:
        return image.with_suffix(".txt")
    parts[last] = "labels"
    return Path(*parts).with_suffix(".txt")


def parse_label_file(path: Path, w: int, h: int, num_classes: int, report: DataReport) -> tuple[list, list]:
    """(boxes in pixels x1 y1 x2 y2, labels) of one label file; bad lines are reported and dropped."""
    boxes, labels = [], []
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            cls, cx, cy, bw, bh = int(fields[0]), *(float(v) for v in fields[1:5])
            if len(fields) != 5 or not all(math.isfinite(v) for v in (cx, cy, bw, bh)):
                raise ValueError
        except (ValueError, IndexError):
            report.add(BAD_COORDS, f"{path.name}:{n}")
            continue
        if not 0 <= cls < num_classes:
            report.add(UNKNOWN_CLASS, f"{path.name}:{n}: class {cls}")
            continue
        x1, y1, x2, y2 = (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h
        box = clip_box(x1, y1, x2, y2, w, h, f"{path.name}:{n}", report)
        if box is None:
            continue
        boxes.append(box)
        labels.append(cls)
    return boxes, labels


def load_yolo_split(root: str | Path, split: str, class_names: list[str]) -> tuple[list[Record], DataReport]:
    """Records and problems of the split key ``split`` of the data.yaml at ``root``."""
    base, spec = read_data_yaml(root)
    if _names(spec) != list(class_names):
        raise DataError(f"{root}: the data.yaml's names ({', '.join(_names(spec))}) differ from data.classes_path's "
                        f"({', '.join(class_names)})")
    if split not in spec:
        raise DataError(f"{root}: no split '{split}' in the data.yaml (it has {', '.join(k for k in spec if k != 'names')})")
    report, records = DataReport(), []
    for image in split_images(base, spec[split]):
        try:
            w, h, _ = probe_image(image)
        except ImageReadError as e:
            report.add(UNREADABLE_IMAGE, f"{image.name}: {e}")
            continue
        boxes, labels = parse_label_file(label_path(image), w, h, len(class_names), report)
        image_id = str(image.relative_to(base).with_suffix("")) if image.is_relative_to(base) else image.stem
        records.append(Record(image_id, str(image), w, h, np.asarray(boxes, np.float32).reshape(-1, 4),
                              np.asarray(labels, np.int64), np.zeros(len(labels), bool)))
    return records, report


def write_yolo_dataset(splits: dict[str, list[Record]], class_names: list[str], out: str | Path) -> Path:
    """The records of each split written as an Ultralytics dataset under ``out`` (the inverse of the reader):
    ``images/<split>/`` links to the images (copies where links cannot be made), ``labels/<split>/*.txt`` with a
    line ``class cx cy w h`` (fractions) per object, difficult objects left out (YOLO labels have no such
    flag), and ``data.yaml``. Returns the data.yaml's path. ``out`` must be new or empty: nothing is overwritten."""
    import shutil

    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; write a YOLO dataset into a new folder")
    for split, records in splits.items():
        images, labels = out / "images" / split, out / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for rec in records:
            src = Path(rec.path).resolve()
            dst = images / src.name
            try:
                dst.symlink_to(src)
            except OSError:
                shutil.copyfile(src, dst)
            keep = ~rec.difficult
            lines = [f"{int(c)} {(x1 + x2) / 2 / rec.width:.6f} {(y1 + y2) / 2 / rec.height:.6f} "
                     f"{(x2 - x1) / rec.width:.6f} {(y2 - y1) / rec.height:.6f}"
                     for c, (x1, y1, x2, y2) in zip(rec.labels[keep], rec.boxes[keep].tolist(), strict=True)]
            (labels / f"{src.stem}.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    spec = {"path": str(out), **{split: f"images/{split}" for split in splits}, "names": list(class_names)}
    (out / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return out / "data.yaml"
