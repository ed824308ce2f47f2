"""YOLOv4, YOLOv4-tiny and YOLOv4-tiny-3l: backbone -> neck -> head, returning raw maps by stride ascending.

    model = build_model("yolov4", num_classes=20)
    maps = model(images)  # [B, 3 * (5 + C), H/8, W/8], [.., H/16, ..], [.., H/32, ..]
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nets.backbone import CSPDarknet53, CSPDarknet53Tiny
from nets.common import ConvBNAct
from nets.head import YOLOHead
from nets.neck import PANet, TinyFPN, TinyFPN3

# Which anchors (indices into the anchors file, smallest first) each level uses, by stride
# ascending: yolov4.cfg masks 0,1,2 / 3,4,5 / 6,7,8; yolov4-tiny.cfg masks 1,2,3 (stride 16)
# and 3,4,5 (stride 32) -- anchor 0 is unused and anchor 3 shared, as in Darknet; yolov4-tiny-3l.cfg as yolov4.
ARCHS: dict[str, dict[str, Any]] = {
    "yolov4": {"backbone": CSPDarknet53, "neck": PANet, "strides": (8, 16, 32),
               "anchor_masks": ((0, 1, 2), (3, 4, 5), (6, 7, 8))},
    "yolov4-tiny": {"backbone": CSPDarknet53Tiny, "neck": TinyFPN, "strides": (16, 32),
                    "anchor_masks": ((1, 2, 3), (3, 4, 5))},
    "yolov4-tiny-3l": {"backbone": CSPDarknet53Tiny, "neck": TinyFPN3, "strides": (8, 16, 32),
                       "anchor_masks": ((0, 1, 2), (3, 4, 5), (6, 7, 8))},
}


class YOLO(nn.Module):
    """A YOLOv4-family detector; ``forward`` returns one raw map per level, stride ascending."""

    def __init__(self, name: str, num_classes: int, obj_prior: float = 0.01, cls_prior: float | None = None) -> None:
        super().__init__()
        arch = ARCHS[name]
        self.name = name
        self.num_classes = num_classes
        self.strides: tuple[int, ...] = arch["strides"]
        self.anchor_masks: tuple[tuple[int, ...], ...] = arch["anchor_masks"]
        self.backbone = arch["backbone"]()
        self.neck = arch["neck"]()
        self.head = YOLOHead(self.neck.out_channels, len(self.anchor_masks[0]), num_classes, obj_prior, cls_prior)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"input height and width must be multiples of 32, got {h}x{w}")
        return self.head(self.neck(self.backbone(x)))

    def fuse(self) -> YOLO:
        """Fold every BatchNorm into its conv for inference; outputs change only within float tolerance."""
        for m in self.modules():
            if isinstance(m, ConvBNAct):
                m.fuse()
        return self


def build_model(name: str, num_classes: int, obj_prior: float = 0.01, cls_prior: float | None = None) -> YOLO:
    """``name``: ``yolov4`` | ``yolov4-tiny`` | ``yolov4-tiny-3l``; head biases start at the given priors (see YOLOHead)."""
    if name not in ARCHS:
        raise ValueError(f"unknown model '{name}' (valid: {', '.join(ARCHS)})")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return YOLO(name, num_classes, obj_prior, cls_prior)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (conv weights, BN scales and shifts, head biases; not BN running stats)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_summary(model: nn.Module, input_size: int = 416) -> dict[str, float]:
    """Parameters and GFLOPs of one forward at ``input_size`` x ``input_size``, batch 1.

    FLOPs are counted by ``torch.utils.flop_counter`` on a copy of the model on the meta
    device (no compute, no memory): 2 FLOPs per multiply-accumulate of every convolution,
    biases, BN, activations, pooling and additions not counted. That is Darknet's
    convention for the BFLOPs it prints (2 * weights * output positions per conv layer),
    so the numbers compare directly: yolov4 at 416 -> 60.1, at 608 -> 128.4; tiny at 416 -> 6.9.
    """
    meta = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(torch.empty(1, 3, input_size, input_size, device="meta"))
    return {"params": count_parameters(model), "gflops": counter.get_total_flops() / 1e9, "input_size": input_size}
