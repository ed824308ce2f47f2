"""Darknet's layer lists of yolov4.cfg, yolov4-tiny.cfg and yolov4-tiny-3l.cfg, for the model and Darknet
tests, and ``randomize_bn`` (batch-norm statistics away from their identity start, so that fusion is tested)."""

from __future__ import annotations

import torch
from torch import nn

# ---------------------------------------------------------------- the cfgs' layer lists
# Darknet's layer lists, one token per [section], transcribed from yolov4.cfg and
# yolov4-tiny.cfg: cF_K conv with BN (F filters, KxK), /2 stride 2, L leaky (else mish),
# h the linear output conv with bias, r route (relative or absolute indices), rh route to the
# second half of the channels (groups=2 group_id=1), s shortcut, m max-pool stride 1,
# M max-pool stride 2, u upsample, y yolo.


def _csp(c: int, n: int, back: int, hidden: int | None = None, branch: int | None = None) -> list[str]:
    b = branch or c // 2
    return [f"c{c}_3/2", f"c{b}_1", "r-2", f"c{b}_1"] + [f"c{hidden or b}_1", f"c{b}_3", "s"] * n + [
        f"c{b}_1", f"r-1,-{back}", f"c{c}_1"]


YOLOV4_CFG = (
    ["c32_3"] + _csp(64, 1, 7, hidden=32, branch=64) + _csp(128, 2, 10) + _csp(256, 8, 28) + _csp(512, 8, 28)
    + _csp(1024, 4, 16)
    + ["c512_1L", "c1024_3L", "c512_1L", "m5", "r-2", "m9", "r-4", "m13", "r-1,-3,-5,-6",
       "c512_1L", "c1024_3L", "c512_1L", "c256_1L", "u", "r85", "c256_1L", "r-1,-3",
       "c256_1L", "c512_3L", "c256_1L", "c512_3L", "c256_1L", "c128_1L", "u", "r54", "c128_1L", "r-1,-3",
       "c128_1L", "c256_3L", "c128_1L", "c256_3L", "c128_1L",
       "c256_3L", "h", "y", "r-4", "c256_3/2L", "r-1,-16",
       "c256_1L", "c512_3L", "c256_1L", "c512_3L", "c256_1L", "c512_3L", "h", "y", "r-4", "c512_3/2L", "r-1,-37",
       "c512_1L", "c1024_3L", "c512_1L", "c1024_3L", "c512_1L", "c1024_3L", "h", "y"]
)
TINY_CFG = [
    "c32_3/2L", "c64_3/2L", "c64_3L", "rh", "c32_3L", "c32_3L", "r-1,-2", "c64_1L", "r-6,-1", "M",
    "c128_3L", "rh", "c64_3L", "c64_3L", "r-1,-2", "c128_1L", "r-6,-1", "M",
    "c256_3L", "rh", "c128_3L", "c128_3L", "r-1,-2", "c256_1L", "r-6,-1", "M",
    "c512_3L", "c256_1L", "c512_3L", "h", "y", "r-4", "c128_1L", "u", "r-1,23", "c256_3L", "h", "y",
]
# yolov4-tiny-3l.cfg: yolov4-tiny.cfg, then a stride-8 output from the stride-16 branch's 3x3 conv and layer 15
TINY3L_CFG = TINY_CFG + ["r-3", "c64_1L", "u", "r-1,15", "c128_3L", "h", "y"]


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.1
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
