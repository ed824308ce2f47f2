"""COCO json annotations read into records."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from utils.data.records import EMPTY_BOX, MISSING_IMAGE, UNKNOWN_CLASS, DataError, DataReport, Record


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
