"""Image and box transforms (numpy + OpenCV). Boxes are ``[N, 4]`` x1, y1, x2, y2 in pixels.

Evaluation uses :func:`letterbox` (keep the aspect ratio, grey padding) and its exact inverse
:func:`unletterbox_boxes`. Training uses :func:`random_place` (scale and aspect jitter,
placement, flip), :func:`mosaic` (4 images around a random centre), :func:`mixup` (a blend of
two images) and :func:`hsv_jitter` (lookup tables). After every geometric transform boxes are
clipped to the canvas and :func:`filter_boxes` drops those below a minimum size or that lost
most of their area.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

GREY = 114  # padding value


@dataclass(frozen=True)
class Letterbox:
    """``input_x = original_x * scale_x + pad_x`` (and so for y); the two scales differ only by rounding."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def gains(self) -> np.ndarray:
        return np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)

    def offsets(self) -> np.ndarray:
        return np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)


def letterbox_info(width: int, height: int, size: int) -> Letterbox:
    """The geometry :func:`letterbox` applies to an image of ``width`` x ``height``."""
    scale = min(size / width, size / height)
    nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
    return Letterbox(nw / width, nh / height, (size - nw) // 2, (size - nh) // 2)


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the ratio so that the longer side is ``size``, pad to ``size`` x ``size`` with grey."""
    h, w = img.shape[:2]
    info = letterbox_info(w, h, size)
    nw, nh = round(w * info.scale_x), round(h * info.scale_y)
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR if nw > w else cv2.INTER_AREA)
    out = np.full((size, size, 3), GREY, np.uint8)
    out[int(info.pad_y):int(info.pad_y) + nh, int(info.pad_x):int(info.pad_x) + nw] = resized
    return out, info


def letterbox_boxes(boxes: np.ndarray, info: Letterbox) -> np.ndarray:
    return (boxes * info.gains() + info.offsets()).astype(np.float32)


def unletterbox_boxes(boxes: np.ndarray, info: Letterbox, width: int, height: int) -> np.ndarray:
    """The inverse of :func:`letterbox_boxes`, clipped to the original ``width`` x ``height``."""
    out = (boxes - info.offsets()) / info.gains()
    return np.clip(out, 0, [width, height, width, height]).astype(np.float32)


def clip_boxes(boxes: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.clip(boxes, [x0, y0, x0, y0], [x1, y1, x1, y1]).astype(np.float32)


def filter_boxes(before: np.ndarray, after: np.ndarray, min_size: float, min_area: float) -> np.ndarray:
    """Boolean keep-mask: ``after`` (clipped) at least ``min_size`` px wide and high and keeping
    at least ``min_area`` of the area of ``before`` (the same boxes transformed, unclipped)."""
    w, h = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    area_before = (before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1])
    return (w >= min_size) & (h >= min_size) & (w * h >= min_area * np.maximum(area_before, 1e-6))


@dataclass
class AugmentParams:
    """The training transforms' knobs (from utils.config.schema.DataConfig)."""

    scale: tuple[float, float] = (0.25, 2.0)
    jitter: float = 0.3
    translate: float = 0.5
    flip: float = 0.5
    hsv: tuple[float, float, float] = (0.1, 0.7, 0.4)
    min_box_size: float = 2.0
    min_box_area: float = 0.2

    @classmethod
    def from_config(cls, d) -> AugmentParams:
        return cls(tuple(d.scale), d.jitter, d.translate, d.flip, tuple(d.hsv), d.min_box_size, d.min_box_area)


def _jittered_size(w: int, h: int, target: float, rng: np.random.Generator, jitter: float) -> tuple[int, int]:
    """A size whose longer side is ``target`` and whose aspect ratio is w/h times a random jitter."""
    ar = w / h * rng.uniform(1 - jitter, 1 + jitter) / rng.uniform(1 - jitter, 1 + jitter)
    if ar < 1:
        nh = target
        nw = nh * ar
    else:
        nw = target
        nh = nw / ar
    return max(1, int(round(nw))), max(1, int(round(nh)))


def _paste(canvas: np.ndarray, img: np.ndarray, dx: int, dy: int, region: tuple[int, int, int, int]) -> None:
    """Paste ``img`` with its top-left corner at (dx, dy), only inside ``region`` (x0, y0, x1, y1) of ``canvas``."""
    h, w = img.shape[:2]
    x0, y0 = max(dx, region[0]), max(dy, region[1])
    x1, y1 = min(dx + w, region[2]), min(dy + h, region[3])
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = img[y0 - dy:y1 - dy, x0 - dx:x1 - dx]


def _place(img: np.ndarray, boxes: np.ndarray, nw: int, nh: int, dx: int, dy: int, flip: bool,
           canvas: np.ndarray, region: tuple[int, int, int, int], p: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Resize ``img`` to nw x nh, flip, paste at (dx, dy) within ``region``; returns (boxes, keep-mask)."""
    h, w = img.shape[:2]
    resized = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR if nw * nh > w * h else cv2.INTER_AREA)
    b = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    if flip:
        resized = resized[:, ::-1]
        b = np.stack([nw - b[:, 2], b[:, 1], nw - b[:, 0], b[:, 3]], 1) if len(b) else b
    _paste(canvas, resized, dx, dy, region)
    moved = (b + np.array([dx, dy, dx, dy], np.float32)).astype(np.float32)
    clipped = clip_boxes(moved, *region)
    return clipped, filter_boxes(moved, clipped, p.min_box_size, p.min_box_area)


def random_place(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator,
                 p: AugmentParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale (longer side ``size * U(scale)``), jitter the aspect ratio, place on a grey ``size`` canvas
    (``translate`` = 0 centres it, 0.5 places it anywhere), and flip with probability ``flip``."""
    h, w = img.shape[:2]
    nw, nh = _jittered_size(w, h, size * rng.uniform(*p.scale), rng, p.jitter)
    fx = rng.uniform(0.5 - p.translate, 0.5 + p.translate)
    fy = rng.uniform(0.5 - p.translate, 0.5 + p.translate)
    dx, dy = int(round((size - nw) * fx)), int(round((size - nh) * fy))
    canvas = np.full((size, size, 3), GREY, np.uint8)
    out, keep = _place(img, boxes, nw, nh, dx, dy, rng.random() < p.flip, canvas, (0, 0, size, size), p)
    return canvas, out[keep], labels[keep]


def mosaic(items: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size: int, rng: np.random.Generator,
           p: AugmentParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four (image, boxes, labels) around a random centre in the middle 40% of the canvas.

    Each image is scaled (longer side ``size * U(0.4, 1)``, aspect jitter), flipped at random,
    and put in its quadrant with a corner on the centre; what falls outside its quadrant is cut.
    """
    if len(items) != 4:
        raise ValueError(f"mosaic takes 4 images, got {len(items)}")
    cx, cy = int(size * rng.uniform(0.3, 0.7)), int(size * rng.uniform(0.3, 0.7))
    canvas = np.full((size, size, 3), GREY, np.uint8)
    regions = [(0, 0, cx, cy), (cx, 0, size, cy), (0, cy, cx, size), (cx, cy, size, size)]
    all_boxes, all_labels = [], []
    for k, ((img, boxes, labels), region) in enumerate(zip(items, regions, strict=True)):
        h, w = img.shape[:2]
        nw, nh = _jittered_size(w, h, size * rng.uniform(0.4, 1.0), rng, p.jitter)
        dx = cx - nw if k in (0, 2) else cx  # corner on the centre
        dy = cy - nh if k in (0, 1) else cy
        out, keep = _place(img, boxes, nw, nh, dx, dy, rng.random() < p.flip, canvas, region, p)
        all_boxes.append(out[keep])
        all_labels.append(labels[keep])
    return canvas, np.concatenate(all_boxes).reshape(-1, 4), np.concatenate(all_labels)


def mixup(a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray],
          weight: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blend two images of one size ``a * weight + b * (1 - weight)``; the boxes of both are kept."""
    img = cv2.addWeighted(a[0], weight, b[0], 1 - weight, 0)
    return img, np.concatenate([a[1], b[1]]).reshape(-1, 4), np.concatenate([a[2], b[2]])


def hsv_jitter(img: np.ndarray, rng: np.random.Generator, gains: tuple[float, float, float]) -> np.ndarray:
    """Random hue / saturation / value gains in ``1 +- gains`` applied through lookup tables (BGR in and out)."""
    if not any(gains):
        return img
    r = rng.uniform(-1, 1, 3) * np.asarray(gains) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
