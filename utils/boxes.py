"""Box formats and the IoU family, one implementation each.

Boxes are ``(x1, y1, x2, y2)`` in pixels unless a name says otherwise. Pairwise IoU of
two box sets is :func:`torchvision.ops.box_iou`; :func:`bbox_iou` is the element-wise,
broadcasting form with the GIoU / DIoU / CIoU variants used by the loss (tested against
``torchvision.ops.generalized_box_iou`` / ``distance_box_iou`` / ``complete_box_iou``).
:func:`shape_iou` compares box sizes on a common centre (anchors). The numpy forms serve the
evaluation and the anchor tool: :func:`box_iou_np` (VOC matching), :func:`coco_iou_np`
(pycocotools' definition, crowd boxes included, which the fast COCO evaluation must equal) and
:func:`shape_iou_np`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchvision.ops import box_convert, box_iou

__all__ = ["IOU_KINDS", "bbox_iou", "box_iou", "shape_iou", "xywh_to_xyxy", "xyxy_to_xywh"]

IOU_KINDS = ("iou", "giou", "diou", "ciou")


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``, any leading shape."""
    return box_convert(boxes, "cxcywh", "xyxy")


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``, any leading shape."""
    return box_convert(boxes, "xyxy", "cxcywh")


def bbox_iou(a: torch.Tensor, b: torch.Tensor, kind: str = "iou", eps: float = 1e-7) -> torch.Tensor:
    """IoU of the chosen kind between ``a[..., 4]`` and ``b[..., 4]`` (xyxy), broadcast: ``-> [...]``.

    - ``giou``: IoU - (C - U) / C, C the smallest enclosing box (Rezatofighi et al. 2019);
    - ``diou``: IoU - d^2 / c^2, d the centre distance, c the enclosing box diagonal
      (Zheng et al. 2020);
    - ``ciou``: DIoU - alpha * v, v = 4 / pi^2 (atan(w_b / h_b) - atan(w_a / h_a))^2 and
      alpha = v / (1 - IoU + v), alpha taken as a constant in the gradient (as the paper
      and torchvision do).
    """
    if kind not in IOU_KINDS:
        raise ValueError(f"unknown IoU kind '{kind}' (valid: {', '.join(IOU_KINDS)})")
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    inter = (torch.min(ax2, bx2) - torch.max(ax1, bx1)).clamp(min=0) * (torch.min(ay2, by2) - torch.max(ay1, by1)).clamp(min=0)
    wa, ha = ax2 - ax1, ay2 - ay1
    wb, hb = bx2 - bx1, by2 - by1
    union = wa * ha + wb * hb - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou
    cw = torch.max(ax2, bx2) - torch.min(ax1, bx1)  # enclosing box
    ch = torch.max(ay2, by2) - torch.min(ay1, by1)
    if kind == "giou":
        c_area = cw * ch + eps
        return iou - (c_area - union) / c_area
    c2 = cw**2 + ch**2 + eps  # squared diagonal of the enclosing box
    d2 = ((ax1 + ax2 - bx1 - bx2) ** 2 + (ay1 + ay2 - by1 - by2) ** 2) / 4  # squared centre distance
    if kind == "diou":
        return iou - d2 / c2
    v = (4 / math.pi**2) * (torch.atan(wb / (hb + eps)) - torch.atan(wa / (ha + eps))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - d2 / c2 - alpha * v


def shape_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``wh1 [N, 2]`` and ``wh2 [K, 2]`` (width, height) placed on a common centre: ``-> [N, K]``."""
    inter = torch.min(wh1[:, None, 0], wh2[None, :, 0]) * torch.min(wh1[:, None, 1], wh2[None, :, 1])  # [N, K]
    area1 = wh1[:, 0] * wh1[:, 1]  # [N]
    area2 = wh2[:, 0] * wh2[:, 1]  # [K]
    return inter / (area1[:, None] + area2[None, :] - inter)


# --------------------------------------------------------------------------- numpy (evaluation, anchors)


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a [..., 4]`` and ``b [..., 4]``, broadcast (numpy)."""
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
    return inter / np.maximum(union, np.finfo(np.float64).tiny)


def coco_iou_np(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' box IoU (maskUtils.iou): ``d [..., D, 4]``, ``g [..., G, 4]`` xywh -> ``[..., D, G]``;
    against a crowd box the union is the detection's area."""
    dx1, dy1, dw, dh = (d[..., :, None, k] for k in range(4))
    gx1, gy1, gw, gh = (g[..., None, :, k] for k in range(4))
    w = np.minimum(dx1 + dw, gx1 + gw) - np.maximum(dx1, gx1)
    h = np.minimum(dy1 + dh, gy1 + gh) - np.maximum(dy1, gy1)
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    da, ga = dw * dh, gw * gh
    union = np.where(crowd[..., None, :], da, da + ga - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def shape_iou_np(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of ``wh [N, 2]`` and ``anchors [K, 2]`` on a common centre -> ``[N, K]``."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None].prod(2) + anchors[None].prod(2) - inter)
