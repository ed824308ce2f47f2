"""Raw YOLO map <-> boxes, shared by the model's users and the loss, and the one per-level spec
(:class:`LevelSpec`: strides, anchor groups, scale_x_y) that the assigner, the loss, decoding, drawing
and exported graphs read.

A raw map of one level is ``[B, A * (5 + C), H, W]``; per anchor its channels are
``(tx, ty, tw, th, objectness, class_1 .. class_C)``. Decoding, in input pixels:

    x = (sigmoid(tx) * s - (s - 1) / 2 + grid_x) * stride      (s = scale_x_y, Darknet)
    w = exp(min(tw, WH_LOGIT_MAX)) * anchor_w
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

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


def stride_index(stride: int) -> int:
    """The position of a stride's entry in settings given per stride 8, 16, 32 (0, 1, 2): the configs'
    ``scale_x_y`` and ``balance`` are listed so, whatever levels a model has (yolov4-tiny: 16, 32)."""
    return int(math.log2(stride)) - 3


@dataclass(frozen=True)
class LevelSpec:
    """The model's levels as decoding sees them: every anchor (w, h) in input pixels (smallest first, the
    anchors file), and per level (stride ascending) its anchor indices, stride and Darknet ``scale_x_y``."""

    anchors: tuple[tuple[float, float], ...]
    anchor_masks: tuple[tuple[int, ...], ...]
    strides: tuple[int, ...]
    scale_x_y: tuple[float, ...]

    @classmethod
    def of(cls, anchors: Sequence[Sequence[float]], strides: Sequence[int],
           anchor_masks: Sequence[Sequence[int]] | None = None,
           scale_x_y_by_stride: Sequence[float] = (1.0, 1.0, 1.0)) -> LevelSpec:
        """``anchor_masks`` default: consecutive groups, smallest first; ``scale_x_y_by_stride``: the config's
        values for strides 8, 16, 32 (each level takes its stride's)."""
        strides = tuple(int(s) for s in strides)
        n_per = len(anchors) // len(strides)
        masks = anchor_masks or [range(i * n_per, (i + 1) * n_per) for i in range(len(strides))]
        masks = tuple(tuple(int(i) for i in m) for m in masks)
        if len(masks) != len(strides) or len({len(m) for m in masks}) != 1:
            raise ValueError(f"need one anchor mask of equal length per stride, got {masks}")
        sxy = tuple(float(scale_x_y_by_stride[stride_index(s)]) for s in strides)
        return cls(tuple((float(w), float(h)) for w, h in anchors), masks, strides, sxy)

    @classmethod
    def for_model(cls, model, anchors: Sequence[Sequence[float]],
                  scale_x_y_by_stride: Sequence[float] = (1.0, 1.0, 1.0)) -> LevelSpec:
        """The spec of ``model`` (its ``strides`` and ``anchor_masks``) with these anchors."""
        return cls.of(anchors, model.strides, model.anchor_masks, scale_x_y_by_stride)

    @property
    def num_anchors(self) -> int:
        """Anchors per level."""
        return len(self.anchor_masks[0])
