"""Decoding raw YOLO maps into boxes; shared by the loss and by inference.

A raw map of one level is ``[B, A * (5 + C), H, W]``; per anchor its channels are
``(tx, ty, tw, th, objectness, class_1 .. class_C)``. Decoding, in input pixels:

    x = (sigmoid(tx) * s - (s - 1) / 2 + grid_x) * stride      (s = scale_x_y, Darknet)
    w = exp(min(tw, WH_LOGIT_MAX)) * anchor_w
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torchvision.ops import batched_nms

# exp(10) * the largest anchor (459 px) is about 1e7 px: finite in float16 and float32 alike,
# so one bad logit cannot produce inf (and then NaN) in the IoU terms.
WH_LOGIT_MAX = 10.0


def split_anchors(raw: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """``[B, A * (5 + C), H, W]`` -> ``[B, A, 5 + C, H, W]``, a view (no copy)."""
    b, ch, h, w = raw.shape
    return raw.view(b, num_anchors, ch // num_anchors, h, w)


def to_per_anchor(raw: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """``[B, A * (5 + C), H, W]`` -> ``[B, A, H, W, 5 + C]`` (a view where the layout allows)."""
    return split_anchors(raw, num_anchors).permute(0, 1, 3, 4, 2)


@lru_cache(maxsize=32)
def make_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Cell offsets ``[H, W, 2]`` = (x, y), cached per (H, W, device, dtype)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack((xs, ys), -1)  # [H, W, 2]


def decode_xy(txy: torch.Tensor, cell_xy: torch.Tensor, stride, scale_x_y=1.0) -> torch.Tensor:
    """Box centres in input pixels from the xy logits and the cell offsets, element-wise on
    broadcastable tensors (x and y in a last dimension of 2, or in separate rows alike)."""
    return (txy.sigmoid() * scale_x_y - (scale_x_y - 1) / 2 + cell_xy) * stride


def decode_wh(twh: torch.Tensor, anchor_wh: torch.Tensor) -> torch.Tensor:
    """Box sizes in input pixels from the wh logits and the anchors, element-wise on broadcastable tensors."""
    return twh.clamp(max=WH_LOGIT_MAX).exp() * anchor_wh


def decode(txy: torch.Tensor, twh: torch.Tensor, cell_xy: torch.Tensor, anchor_wh: torch.Tensor, stride: int,
           scale_x_y: float = 1.0) -> torch.Tensor:
    """The decode formula on broadcastable tensors: logits ``txy``, ``twh`` [..., 2], cell offsets
    ``cell_xy`` [..., 2] and anchors ``anchor_wh`` [..., 2] in input pixels -> boxes xyxy [..., 4]."""
    xy, wh = decode_xy(txy, cell_xy, stride, scale_x_y), decode_wh(twh, anchor_wh)
    return torch.cat((xy - wh / 2, xy + wh / 2), -1)


def decode_boxes(pred: torch.Tensor, anchors: torch.Tensor, stride: int, scale_x_y: float = 1.0) -> torch.Tensor:
    """Boxes xyxy in input pixels from per-anchor predictions of a whole level.

    ``pred [B, A, H, W, >=4]`` (tx, ty, tw, th first), ``anchors [A, 2]`` (w, h) in input
    pixels -> ``[B, A, H, W, 4]``.
    """
    h, w = pred.shape[2:4]
    grid = make_grid(h, w, pred.device, pred.dtype)  # [H, W, 2]
    return decode(pred[..., :2], pred[..., 2:4], grid, anchors.to(pred)[None, :, None, None, :], stride, scale_x_y)


@dataclass(frozen=True)
class DecodeSpec:
    """What decoding needs besides the maps: every anchor (w, h) in input pixels, and per level
    (stride ascending) its anchor indices, stride and Darknet ``scale_x_y``."""

    anchors: tuple[tuple[float, float], ...]
    anchor_masks: tuple[tuple[int, ...], ...]
    strides: tuple[int, ...]
    scale_x_y: tuple[float, ...]

    @classmethod
    def for_model(cls, model, anchors, scale_x_y_by_stride=(1.0, 1.0, 1.0)) -> DecodeSpec:
        """``scale_x_y_by_stride``: the config's values for strides 8, 16, 32 (each level takes its stride's)."""
        sxy = tuple(float(scale_x_y_by_stride[int(math.log2(s)) - 3]) for s in model.strides)
        return cls(tuple(tuple(map(float, a)) for a in anchors), tuple(model.anchor_masks), tuple(model.strides), sxy)


def decode_predictions(outputs: list[torch.Tensor], spec: DecodeSpec) -> torch.Tensor:
    """All levels' raw maps -> ``[B, N, 5 + C]``: box xyxy (input pixels), objectness and class probabilities."""
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=outputs[0].device)
    out = []
    for raw, mask, stride, sxy in zip(outputs, spec.anchor_masks, spec.strides, spec.scale_x_y, strict=True):
        p = to_per_anchor(raw.float(), len(mask))  # [B, A, H, W, 5 + C]
        boxes = decode_boxes(p, anchors[list(mask)].to(p), stride, sxy)  # [B, A, H, W, 4]
        out.append(torch.cat((boxes, p[..., 4:].sigmoid()), -1).flatten(1, 3))  # [B, A*H*W, 5 + C]
    return torch.cat(out, 1)


def non_max_suppression(pred: torch.Tensor, conf_thres: float = 0.001, nms_iou: float = 0.5, max_det: int = 300,
                        agnostic: bool = False, classes: list[int] | None = None,
                        max_candidates: int = 30000) -> list[torch.Tensor]:
    """``[B, N, 5 + C]`` decoded predictions -> per image ``[K, 6]`` = (x1, y1, x2, y2, score, class).

    Score = objectness x the best class probability; boxes scoring below ``conf_thres`` are
    dropped, then :func:`torchvision.ops.batched_nms` per class (or across classes with
    ``agnostic``), keeping the ``max_det`` best. ``max_candidates`` bounds the work on an
    untrained model whose every box passes the threshold.
    """
    results = []
    for p in pred:  # [N, 5 + C]
        cls_prob, cls = p[:, 5:].max(1)
        score = p[:, 4] * cls_prob
        keep = score > conf_thres
        if classes is not None:
            keep &= torch.isin(cls, torch.as_tensor(classes, device=cls.device))
        boxes, score, cls = p[keep, :4], score[keep], cls[keep]
        if len(score) > max_candidates:
            top = score.topk(max_candidates).indices
            boxes, score, cls = boxes[top], score[top], cls[top]
        idx = batched_nms(boxes, score, torch.zeros_like(cls) if agnostic else cls, nms_iou)[:max_det]
        results.append(torch.cat((boxes[idx], score[idx, None], cls[idx, None].float()), 1))
    return results
