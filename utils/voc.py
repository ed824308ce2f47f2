"""Read detection datasets into records: Pascal VOC folders (and COCO json), with a problem report.

A split entry such as ``VOC2007/trainval`` means ``<root>/VOC2007/ImageSets/Main/trainval.txt``,
whose ids lead to ``Annotations/<id>.xml`` and ``JPEGImages/<id>.jpg`` (``.jpeg`` / ``.png``
also found). Boxes: VOC stores 1-based inclusive pixel indices ``xmin..xmax``; a record holds
``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``, the box's extent in 0-based continuous
pixel coordinates (the convention of torchvision and detectron2).

Problems are never fatal in the middle of anything: every file is checked when the split is
read, before training starts; what cannot be used is skipped, and a :class:`DataReport` names
each kind of problem, its count and the first files. ``strict`` turns any problem into an error.
Parsed splits are cached next to the split list, keyed by the file list, sizes and mtimes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")

# Problem kinds, as the report names them. Those marked (kept) do not drop the image.
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image (empty, corrupt or truncated)"
WRONG_EXTENSION = "image format differs from its extension (kept)"
MISSING_XML = "missing annotation"
MALFORMED_XML = "malformed XML"
NO_SIZE = "XML without <size>, size taken from the image (kept)"
SIZE_MISMATCH = "XML size differs from the image, image size used (kept)"
UNKNOWN_CLASS = "unknown class name (object dropped)"
BAD_COORDS = "non-numeric or NaN coordinates (object dropped)"
CLIPPED_BOX = "box outside the image, clipped (kept)"
EMPTY_BOX = "empty box after clipping (object dropped)"
DUPLICATE_ID = "id listed twice (kept once)"
EMPTY_SPLIT = "empty split file"


class DataError(ValueError):
    """A dataset that cannot be used (or a problem under ``data.strict``)."""


@dataclass
class Record:
    """One image and its objects. ``boxes [N, 4]`` x1, y1, x2, y2 in pixels (see module doc)."""

    image_id: str
    path: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray  # [N] int64 class indices
    difficult: np.ndarray  # [N] bool

    def to_json(self) -> dict:
        return {"id": self.image_id, "path": self.path, "w": self.width, "h": self.height,
                "boxes": self.boxes.round(3).tolist(), "labels": self.labels.tolist(), "difficult": self.difficult.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> Record:
        return cls(d["id"], d["path"], d["w"], d["h"], np.asarray(d["boxes"], np.float32).reshape(-1, 4),
                   np.asarray(d["labels"], np.int64), np.asarray(d["difficult"], bool))


@dataclass
class DataReport:
    """Problems found while reading a dataset: kind -> list of 'file: detail'."""

    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, item: str) -> None:
        self.problems[kind].append(item)

    def merge(self, other: DataReport) -> None:
        for kind, items in other.problems.items():
            self.problems[kind].extend(items)

    def __bool__(self) -> bool:
        return any(self.problems.values())

    def count(self, kind: str) -> int:
        return len(self.problems.get(kind, []))

    def summary(self, first: int = 3) -> str:
        if not self:
            return "no problems found"
        lines = []
        for kind, items in sorted(self.problems.items(), key=lambda kv: -len(kv[1])):
            shown = "; ".join(items[:first]) + ("; ..." if len(items) > first else "")
            lines.append(f"  {kind}: {len(items)} ({shown})")
        return "dataset problems:\n" + "\n".join(lines)

    def to_json(self) -> dict:
        return {k: list(v) for k, v in self.problems.items()}

    @classmethod
    def from_json(cls, d: dict) -> DataReport:
        report = cls()
        for k, v in d.items():
            report.problems[k].extend(v)
        return report


# --------------------------------------------------------------------------- images


class ImageReadError(OSError):
    pass


def read_image(path: str | Path) -> np.ndarray:
    """An image as ``[H, W, 3]`` uint8 BGR, whatever it was stored as (gray, RGBA, 16-bit, PNG named .jpg)."""
    data = np.fromfile(str(path), dtype=np.uint8)  # also works for non-ASCII paths
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ImageReadError(f"cannot decode image {path}")
    return img


def _image_ends(path: Path, fmt: str) -> bool:
    """JPEG and PNG files end with a marker; a truncated download does not."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 1024))
        tail = fh.read()
    if fmt == "JPEG":
        return b"\xff\xd9" in tail
    if fmt == "PNG":
        return b"IEND" in tail
    return True


def probe_image(path: Path) -> tuple[int, int, str]:
    """(width, height, format) from the header, without decoding; raises ImageReadError."""
    try:
        with Image.open(path) as im:
            w, h, fmt = im.size[0], im.size[1], im.format or "?"
    except Exception as e:  # PIL raises several types for bad files
        raise ImageReadError(f"{type(e).__name__}: {e}") from None
    if w <= 0 or h <= 0:
        raise ImageReadError(f"image size {w}x{h}")
    if not _image_ends(path, fmt):
        raise ImageReadError(f"{fmt} file is truncated")
    return w, h, fmt


# --------------------------------------------------------------------------- VOC


def _number(node: ET.Element | None, tag: str) -> float:
    text = node.findtext(tag) if node is not None else None
    value = float(text)  # ValueError / TypeError for text and missing tags
    if not math.isfinite(value):
        raise ValueError(f"{tag} = {text}")
    return value


def parse_voc_xml(xml_path: Path, image_path: Path, class_index: dict[str, int], report: DataReport,
                  image_size: tuple[int, int] | None = None) -> Record | None:
    """One annotation file -> Record (None if unusable). ``image_size`` (w, h) from the image header."""
    name = xml_path.name
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        report.add(MALFORMED_XML, f"{name}: {e}")
        return None
    size = root.find("size")
    try:
        w, h = int(_number(size, "width")), int(_number(size, "height"))
        if w <= 0 or h <= 0:
            raise ValueError
    except (ValueError, TypeError):
        w = h = 0
    if image_size is not None:
        if w == 0:
            report.add(NO_SIZE, name)
        elif (w, h) != tuple(image_size):
            report.add(SIZE_MISMATCH, f"{name}: XML {w}x{h}, image {image_size[0]}x{image_size[1]}")
        w, h = image_size
    elif w == 0:
        report.add(MALFORMED_XML, f"{name}: no usable <size> and no image to take it from")
        return None
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        cls_name = (obj.findtext("name") or "").strip()
        if cls_name not in class_index:
            report.add(UNKNOWN_CLASS, f"{name}: '{cls_name}'")
            continue
        bb = obj.find("bndbox")
        try:
            x1, y1 = _number(bb, "xmin") - 1, _number(bb, "ymin") - 1
            x2, y2 = _number(bb, "xmax"), _number(bb, "ymax")
        except (ValueError, TypeError):
            report.add(BAD_COORDS, name)
            continue
        cx1, cy1, cx2, cy2 = min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h)
        if cx2 - cx1 < 1 or cy2 - cy1 < 1:
            report.add(EMPTY_BOX, f"{name}: ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            report.add(CLIPPED_BOX, f"{name}: ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
        boxes.append((cx1, cy1, cx2, cy2))
        labels.append(class_index[cls_name])
        try:
            difficult.append(int(obj.findtext("difficult") or 0) == 1)
        except ValueError:
            difficult.append(False)
    return Record(xml_path.stem, str(image_path), w, h, np.asarray(boxes, np.float32).reshape(-1, 4),
                  np.asarray(labels, np.int64), np.asarray(difficult, bool))


def _find_image(folder: Path, image_id: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        p = folder / f"{image_id}{suffix}"
        if p.is_file():
            return p
    return None


def _stat(p: Path | None) -> list[int]:
    if p is None:
        return [0, 0]
    st = p.stat()
    return [st.st_mtime_ns, st.st_size]


def load_voc_split(root: str | Path, split: str, class_names: list[str], cache: bool = True,
                   write_cache: bool = True) -> tuple[list[Record], DataReport]:
    """Records and problems of one split entry, ``YEAR/split`` (e.g. ``VOC2007/trainval``).

    With ``cache``, a cache file beside the split list is read when its key matches, and written
    (atomically, where ``write_cache``: rank 0 of a distributed run) when it does not.
    """
    if split.count("/") != 1:
        raise DataError(f"a VOC split is 'FOLDER/split' (e.g. VOC2007/trainval), got '{split}'")
    folder, name = split.split("/")
    base = Path(root) / folder
    list_file = base / "ImageSets" / "Main" / f"{name}.txt"
    if not list_file.is_file():
        raise DataError(f"split list not found: {list_file} (see VOCdevkit/README.md for the layout)")
    report = DataReport()
    ids, seen = [], set()
    for line in list_file.read_text(encoding="utf-8", errors="replace").splitlines():
        image_id = line.split()[0] if line.split() else ""
        if not image_id:
            continue
        if image_id in seen:
            report.add(DUPLICATE_ID, f"{split}: {image_id}")
            continue
        seen.add(image_id)
        ids.append(image_id)
    if not ids:
        report.add(EMPTY_SPLIT, str(list_file))
        return [], report

    xmls = [base / "Annotations" / f"{i}.xml" for i in ids]
    images = [_find_image(base / "JPEGImages", i) for i in ids]
    # the records hold image paths under ``root`` as given: a cache read through another root (another
    # relative path, another working directory) must not hand back paths that do not exist from here
    key_src = json.dumps([CACHE_VERSION, str(root), class_names, ids, [_stat(x if x.is_file() else None) for x in xmls],
                          [_stat(p) for p in images]])
    key = hashlib.sha1(key_src.encode()).hexdigest()
    cache_file = list_file.with_name(f"{name}.cache.json")
    if cache and cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text())
            if cached.get("key") == key:
                report.merge(DataReport.from_json(cached["report"]))
                return [Record.from_json(r) for r in cached["records"]], report
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache is rebuilt

    class_index = {n: i for i, n in enumerate(class_names)}
    records = []
    for image_id, xml_path, image_path in zip(ids, xmls, images, strict=True):
        if image_path is None:
            report.add(MISSING_IMAGE, f"{split}: {image_id}")
            continue
        try:
            w, h, fmt = probe_image(image_path)
        except ImageReadError as e:
            report.add(UNREADABLE_IMAGE, f"{image_path.name}: {e}")
            continue
        expected = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(image_path.suffix.lower())
        if expected and fmt != expected:
            report.add(WRONG_EXTENSION, f"{image_path.name}: {fmt}")
        if not xml_path.is_file():
            report.add(MISSING_XML, f"{split}: {image_id}")
            continue
        record = parse_voc_xml(xml_path, image_path, class_index, report, (w, h))
        if record is not None:
            records.append(record)
    if cache and write_cache:
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        try:  # a reader never sees half a file: written aside, then renamed into place
            tmp.write_text(json.dumps({"key": key, "records": [r.to_json() for r in records], "report": report.to_json()}))
            os.replace(tmp, cache_file)
        except OSError as e:
            LOGGER.debug("annotation cache not written: %s", e)
            with contextlib.suppress(OSError):
                tmp.unlink()  # our own temporary name
    return records, report


# --------------------------------------------------------------------------- COCO


def load_coco_split(root: str | Path, split: str, class_names: list[str]) -> tuple[list[Record], DataReport]:
    """``<root>/annotations/instances_<split>.json`` with images in ``<root>/<split>/``.

    COCO's category ids (1..90 with gaps) map to ``class_names`` by name, or, where the names
    differ, by the order of the ids. Crowd boxes are kept as difficult (ignored in training
    and evaluation).
    """
    ann_file = Path(root) / "annotations" / f"instances_{split}.json"
    if not ann_file.is_file():
        raise DataError(f"COCO annotations not found: {ann_file}")
    data = json.loads(ann_file.read_text())
    report = DataReport()
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    by_name = {n: i for i, n in enumerate(class_names)}
    if all(c["name"] in by_name for c in cats):
        cat_map = {c["id"]: by_name[c["name"]] for c in cats}
    elif len(cats) == len(class_names):
        cat_map = {c["id"]: i for i, c in enumerate(cats)}
    else:
        raise DataError(f"{ann_file}: {len(cats)} categories do not match the {len(class_names)} class names")
    anns = defaultdict(list)
    for a in data.get("annotations", []):
        anns[a["image_id"]].append(a)
    records = []
    for img in data.get("images", []):
        path = Path(root) / split / img["file_name"]
        if not path.is_file():
            report.add(MISSING_IMAGE, img["file_name"])
            continue
        w, h = int(img["width"]), int(img["height"])
        boxes, labels, difficult = [], [], []
        for a in anns[img["id"]]:
            x, y, bw, bh = a["bbox"]
            x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
            if x2 - x1 < 1 or y2 - y1 < 1 or a["category_id"] not in cat_map:
                report.add(EMPTY_BOX if a["category_id"] in cat_map else UNKNOWN_CLASS, f"{img['file_name']}")
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(cat_map[a["category_id"]])
            difficult.append(bool(a.get("iscrowd", 0)))
        records.append(Record(str(img["id"]), str(path), w, h, np.asarray(boxes, np.float32).reshape(-1, 4),
                              np.asarray(labels, np.int64), np.asarray(difficult, bool)))
    return records, report


# --------------------------------------------------------------------------- entry point


def load_records(data_cfg, splits: list[str], class_names: list[str],
                 write_cache: bool = True) -> tuple[list[Record], DataReport]:
    """All records of ``splits`` (``data_cfg``: utils.config.schema.DataConfig), with one merged report.
    ``write_cache``: false on the ranks of a distributed run but the first, which alone writes caches.

    Raises DataError when nothing is usable, or under ``data_cfg.strict`` when anything is wrong.
    """
    records: list[Record] = []
    report = DataReport()
    for split in splits:
        if data_cfg.format == "coco":
            recs, rep = load_coco_split(data_cfg.root, split, class_names)
        else:
            recs, rep = load_voc_split(data_cfg.root, split, class_names, cache=data_cfg.cache, write_cache=write_cache)
        records += recs
        report.merge(rep)
    if report:
        if data_cfg.strict:
            raise DataError(f"data.strict is on and the dataset has problems:\n{report.summary()}")
        LOGGER.warning("%s", report.summary())
    if not records:
        raise DataError(f"no usable images in {', '.join(splits)} under {data_cfg.root}\n{report.summary()}")
    return records, report


def class_counts(records: list[Record], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Objects per class ``[C]`` (not difficult) and difficult objects per class ``[C]``."""
    labels = np.concatenate([r.labels for r in records]) if records else np.zeros(0, np.int64)
    diff = np.concatenate([r.difficult for r in records]) if records else np.zeros(0, bool)
    return (np.bincount(labels[~diff], minlength=num_classes), np.bincount(labels[diff], minlength=num_classes))
