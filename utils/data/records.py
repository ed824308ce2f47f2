"""What a dataset becomes: a :class:`Record` per image, a :class:`DataReport` of its problems.

Boxes: a record holds ``x1, y1, x2, y2``, the box's extent in 0-based continuous pixel
coordinates (the convention of torchvision and detectron2); each reader converts its format's
convention into this one. Problems are never fatal in the middle of anything: every file is
checked when a split is read, before training starts; what cannot be used is skipped, and the
report names each kind of problem (the constants below), its count and the first files.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

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


def clip_box(x1: float, y1: float, x2: float, y2: float, w: int, h: int, where: str,
             report: DataReport) -> tuple[float, float, float, float] | None:
    """A box clipped to its ``w`` x ``h`` image, or None when less than a pixel is left; either is reported
    (as CLIPPED_BOX or EMPTY_BOX, ``where`` naming the file and the object)."""
    cx1, cy1, cx2, cy2 = min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h)
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        report.add(EMPTY_BOX, where)
        return None
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        report.add(CLIPPED_BOX, where)
    return cx1, cy1, cx2, cy2


def class_counts(records: list[Record], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Objects per class ``[C]`` (not difficult) and difficult objects per class ``[C]``."""
    labels = np.concatenate([r.labels for r in records]) if records else np.zeros(0, np.int64)
    diff = np.concatenate([r.difficult for r in records]) if records else np.zeros(0, bool)
    return (np.bincount(labels[~diff], minlength=num_classes), np.bincount(labels[diff], minlength=num_classes))
