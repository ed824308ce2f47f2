"""Loss inputs for the loss and assignment tests: the yolov4 and yolov4-tiny geometries (``V4``, ``TINY``), a
loss on one of them (``make_loss``), random raw maps and random targets with near-duplicates (collisions)."""

from __future__ import annotations

import torch

from nets.loss import YOLOLoss
from utils.config.files import read_anchors

ANCHORS = read_anchors("model_data/yolo_anchors.txt")
TINY_ANCHORS = read_anchors("model_data/yolo_tiny_anchors.txt")
V4 = {"anchors": ANCHORS, "strides": (8, 16, 32), "anchor_masks": ((0, 1, 2), (3, 4, 5), (6, 7, 8))}
TINY = {"anchors": TINY_ANCHORS, "strides": (16, 32), "anchor_masks": ((1, 2, 3), (3, 4, 5))}


def make_loss(num_classes: int = 4, input_size: int = 128, arch: dict = V4, **kw) -> YOLOLoss:
    return YOLOLoss.build(num_classes, arch["anchors"], arch["strides"], input_size, arch["anchor_masks"], **kw)


def random_maps(loss: YOLOLoss, batch: int, size: int, seed: int = 0, scale: float = 1.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ch = loss.num_anchors * (5 + loss.num_classes)
    return [torch.randn(batch, ch, size // s, size // s, generator=g) * scale for s in loss.strides]


def random_targets(batch: int, per_image: int, size: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        n = per_image
        cxy = torch.rand(n, 2, generator=g) * size
        wh = torch.rand(n, 2, generator=g) * size * 0.6 + 3
        cls = torch.randint(0, num_classes, (n, 1), generator=g).float()
        boxes = torch.cat([cxy - wh / 2, cxy + wh / 2], 1).clamp(0, size)
        rows.append(torch.cat([torch.full((n, 1), float(b)), cls, boxes], 1))
        # near-duplicates of the first boxes: same cell and anchor, so collisions happen
        dup = rows[-1][:3].clone()
        dup[:, 2:] += torch.rand(3, 4, generator=g) * 2
        rows.append(dup)
    return torch.cat(rows)
