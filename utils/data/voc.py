"""Pascal VOC folders: a split list, its XML annotations and images, read into records (cached).

A split entry such as ``VOC2007/trainval`` means ``<root>/VOC2007/ImageSets/Main/trainval.txt``,
whose ids lead to ``Annotations/<id>.xml`` and ``JPEGImages/<id>.jpg`` (``.jpeg`` / ``.png``
also found). VOC stores 1-based inclusive pixel indices ``xmin..xmax``; a record holds
``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``. ``strict`` (``data.strict``) turns any
problem into an error. Parsed splits are cached next to the split list, keyed by the root, the
file list, sizes and mtimes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from utils.data.images import ImageReadError, find_image, probe_image
from utils.data.records import (
    BAD_COORDS,
    DUPLICATE_ID,
    EMPTY_SPLIT,
    MALFORMED_XML,
    MISSING_IMAGE,
    MISSING_XML,
    NO_SIZE,
    SIZE_MISMATCH,
    UNKNOWN_CLASS,
    UNREADABLE_IMAGE,
    WRONG_EXTENSION,
    DataError,
    DataReport,
    Record,
    clip_box,
)

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = 1


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
        box = clip_box(x1, y1, x2, y2, w, h, f"{name}: ({x1:g}, {y1:g}, {x2:g}, {y2:g})", report)
        if box is None:
            continue
        boxes.append(box)
        labels.append(class_index[cls_name])
        try:
            difficult.append(int(obj.findtext("difficult") or 0) == 1)
        except ValueError:
            difficult.append(False)
    return Record(xml_path.stem, str(image_path), w, h, np.asarray(boxes, np.float32).reshape(-1, 4),
                  np.asarray(labels, np.int64), np.asarray(difficult, bool))


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
    images = [find_image(base / "JPEGImages", i) for i in ids]
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
