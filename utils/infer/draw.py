"""Drawing detections and objectness heatmaps on images."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from nets.box_coding import split_anchors


def class_colour(c: int) -> tuple[int, int, int]:
    """A stable BGR colour per class index: hues spaced by the golden ratio, so neighbours differ."""
    r, g, b = colorsys.hsv_to_rgb((c * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(img: np.ndarray, dets: np.ndarray, class_names: Sequence[str], scores: bool = True) -> np.ndarray:
    """Boxes with "name 0.87" labels (``scores`` false: "name" alone, for ground truth) drawn on a copy of the
    BGR image ``img``.

    ``dets [K, 6]`` = (x1, y1, x2, y2, score, class) in the image's pixels. Line width and
    text follow the image size; a label sits above its box, or inside it at the top when there
    is no room above, and is shifted to stay within the image. Low scores are drawn first, so
    the best boxes end on top.
    """
    out = img.copy()
    h, w = out.shape[:2]
    lw = max(1, round((h + w) / 2 * 0.003))
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, lw / 3)
    thick = max(1, lw - 1)
    for x1, y1, x2, y2, score, c in sorted(dets.tolist(), key=lambda d: d[4]):
        c = int(c)
        colour = class_colour(c)
        p1 = (int(round(x1)), int(round(y1)))
        p2 = (int(round(x2)), int(round(y2)))
        cv2.rectangle(out, p1, p2, colour, lw, cv2.LINE_AA)
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        label = f"{name} {score:.2f}" if scores else name
        (tw, th), base = cv2.getTextSize(label, font, scale, thick)
        th += base
        x = min(max(p1[0], 0), max(w - tw - 2, 0))
        y = p1[1] - th - 2 if p1[1] - th - 2 >= 0 else max(p1[1], 0)  # above the box, else just inside it
        y = min(y, max(h - th - 2, 0))
        cv2.rectangle(out, (x, y), (x + tw + 2, y + th + 2), colour, -1, cv2.LINE_AA)
        luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
        text_colour = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        cv2.putText(out, label, (x + 1, y + th - base + 1), font, scale, text_colour, thick, cv2.LINE_AA)
    return out


def objectness_heatmap(maps: Sequence[torch.Tensor], num_anchors: int, size: int) -> np.ndarray:
    """``[B, size, size]`` float32 in [0, 1]: per pixel of the letterboxed input, the highest objectness
    over anchors and levels (each level's map resized to the input)."""
    out = None
    for raw in maps:
        obj = split_anchors(raw.float(), num_anchors)[:, :, 4].sigmoid().amax(1, keepdim=True)
        up = torch.nn.functional.interpolate(obj, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        out = up if out is None else torch.maximum(out, up)
    return out.cpu().numpy()


def overlay_heatmap(img: np.ndarray, heat: np.ndarray, info) -> np.ndarray:
    """Blend a letterboxed heatmap (``info``: its utils.data.augment.Letterbox) onto the original image."""
    h, w = img.shape[:2]
    x0, y0 = int(round(info.pad_x)), int(round(info.pad_y))
    nw, nh = int(round(w * info.scale_x)), int(round(h * info.scale_y))
    crop = heat[y0:y0 + max(nh, 1), x0:x0 + max(nw, 1)]
    crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(crop * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(img, 0.55, colour, 0.45, 0)


def image_grid(images: Sequence[np.ndarray], cell: int, cols: int = 4) -> np.ndarray:
    """BGR images letterboxed into ``cell`` x ``cell`` tiles, ``cols`` a row, one picture."""
    from utils.data.augment import letterbox

    rows = -(-len(images) // cols)
    grid = np.full((rows * cell, cols * cell, 3), 255, np.uint8)
    for k, img in enumerate(images):
        tile, _ = letterbox(img, cell)
        r, c = divmod(k, cols)
        grid[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = tile
    return grid
