"""Pictures whose boxes are known exactly: solid rectangles of palette colours on a dark ground, as arrays
(``rect_image``) and as image files with their records (``rect_records``), and the check that boxes still
match the rectangles' pixels after a transform (``assert_boxes_match_pixels``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.data.records import Record

PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
                    (255, 140, 0), (140, 0, 255), (0, 140, 255), (255, 255, 255), (140, 255, 0), (0, 255, 140),
                    (255, 0, 140), (140, 140, 255), (255, 140, 140), (140, 255, 255)], np.uint8)
BACKGROUND = 30


def rect_image(rng: np.random.Generator, colours: list[int], w: int = 200, h: int = 150):
    """A dark image with one solid rectangle per colour (not overlapping); boxes = their pixel extents."""
    img = np.full((h, w, 3), BACKGROUND, np.uint8)
    boxes, taken = [], np.zeros((h, w), bool)
    for c in colours:
        for _ in range(200):
            bw, bh = rng.integers(24, 60), rng.integers(24, 50)
            x, y = rng.integers(-10, w - bw + 10), rng.integers(-10, h - bh + 10)  # some cut by the border
            x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
            if x2 - x1 >= 12 and y2 - y1 >= 12 and not taken[max(y1 - 2, 0):y2 + 2, max(x1 - 2, 0):x2 + 2].any():
                break
        taken[y1:y2, x1:x2] = True
        img[y1:y2, x1:x2] = PALETTE[c]
        boxes.append((x1, y1, x2, y2))
    return img, np.array(boxes, np.float32), np.array(colours, np.int64)


def assert_boxes_match_pixels(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, tol: float = 2.0) -> None:
    """Each box equals the extent of the pixels of its rectangle's colour within ``tol`` px."""
    assert len(boxes) == len(labels)
    for box, c in zip(boxes, labels, strict=True):
        close = (np.abs(img.astype(int) - PALETTE[c].astype(int)).max(2) <= 40).astype(np.uint8)
        # an opening drops the 1-px seams where interpolation blends two other colours into this one
        ys, xs = np.nonzero(cv2.morphologyEx(close, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)))
        assert len(xs), f"colour {c} not found for box {box}"
        extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        np.testing.assert_allclose(box, extent, atol=tol, err_msg=f"colour {c}")


def rect_records(tmp_path: Path, n: int = 6) -> list[Record]:
    """Images of solid rectangles whose class is the rectangle's palette colour."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        colours = [int(c) for c in rng.choice(16, 3, replace=False)]
        img, boxes, labels = rect_image(rng, colours)
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), img[:, :, ::-1])  # palette is RGB; files are BGR
        records.append(Record(str(i), str(path), img.shape[1], img.shape[0], boxes, labels,
                              np.array([False, False, i % 2 == 1])))
    return records
