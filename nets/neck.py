"""SPP + PANet (YOLOv4) and the tiny FPNs (YOLOv4-tiny, YOLOv4-tiny-3l), LeakyReLU(0.1), as in Darknet's cfgs.

Submodules are created in the order the cfg lists their convolutions, and each
forward runs them in that order (nets/darknet.py relies on it). The outputs are
the inputs of the YOLO output convs, ordered by stride ascending.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nets.common import ConvBNAct


def conv_stack(c_in: int, c: int, n: int) -> nn.Sequential:
    """``n`` convs alternating 1x1 to ``c`` and 3x3 to ``2c``, starting with the 1x1 (cfg's 3- and 5-conv sets)."""
    layers = []
    for i in range(n):
        k, c_out = (1, c) if i % 2 == 0 else (3, 2 * c)
        layers.append(ConvBNAct(c_in, c_out, k, act="leaky"))
        c_in = c_out
    return nn.Sequential(*layers)


class SPP(nn.Module):
    """Spatial pyramid pooling: max-pools 13, 9, 5 at stride 1, concatenated ``[13, 9, 5, x]`` (cfg route -1,-3,-5,-6)."""

    def __init__(self, sizes: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        self.pools = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in sizes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([pool(x) for pool in reversed(self.pools)] + [x], 1)


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Darknet's ``[upsample] stride=2``: nearest neighbour."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class PANet(nn.Module):
    """SPP on c5, a top-down path to stride 8, then a bottom-up path back to stride 32.

    ``forward((c3 [B,256,H/8], c4 [B,512,H/16], c5 [B,1024,H/32]))`` ->
    ``(p3 [B,256,H/8], p4 [B,512,H/16], p5 [B,1024,H/32])``, each after the 3x3 conv
    that precedes its YOLO output conv.
    """

    out_channels = (256, 512, 1024)

    def __init__(self) -> None:
        super().__init__()
        # top-down (cfg layers 105-136)
        self.spp_pre = conv_stack(1024, 512, 3)
        self.spp = SPP()
        self.spp_post = conv_stack(2048, 512, 3)
        self.reduce5 = ConvBNAct(512, 256, 1, act="leaky")  # before upsampling to stride 16
        self.lateral4 = ConvBNAct(512, 256, 1, act="leaky")  # on c4 (route 85)
        self.td4 = conv_stack(512, 256, 5)
        self.reduce4 = ConvBNAct(256, 128, 1, act="leaky")  # before upsampling to stride 8
        self.lateral3 = ConvBNAct(256, 128, 1, act="leaky")  # on c3 (route 54)
        self.td3 = conv_stack(256, 128, 5)
        # stride 8 output, then bottom-up (cfg layers 137-159)
        self.out3 = ConvBNAct(128, 256, 3, act="leaky")
        self.down3 = ConvBNAct(128, 256, 3, 2, act="leaky")
        self.bu4 = conv_stack(512, 256, 5)
        self.out4 = ConvBNAct(256, 512, 3, act="leaky")
        self.down4 = ConvBNAct(256, 512, 3, 2, act="leaky")
        self.bu5 = conv_stack(1024, 512, 5)
        self.out5 = ConvBNAct(512, 1024, 3, act="leaky")

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3, c4, c5 = feats
        x5 = self.spp_post(self.spp(self.spp_pre(c5)))  # [B, 512, H/32]
        up = upsample(self.reduce5(x5))  # [B, 256, H/16]
        x4 = self.td4(torch.cat([self.lateral4(c4), up], 1))  # [B, 256, H/16]
        up = upsample(self.reduce4(x4))  # [B, 128, H/8]
        x3 = self.td3(torch.cat([self.lateral3(c3), up], 1))  # [B, 128, H/8]
        p3 = self.out3(x3)
        x4 = self.bu4(torch.cat([self.down3(x3), x4], 1))  # [B, 256, H/16]
        p4 = self.out4(x4)
        x5 = self.bu5(torch.cat([self.down4(x4), x5], 1))  # [B, 512, H/32]
        p5 = self.out5(x5)
        return p3, p4, p5


class TinyFPN(nn.Module):
    """YOLOv4-tiny's neck: 1x1 and 3x3 convs on c5, and an upsampled branch joined to c4.

    ``forward((c3, c4 [B,256,H/16], c5 [B,512,H/32]))`` -> ``(p4 [B,256,H/16], p5 [B,512,H/32])``; c3 is unused.
    """

    out_channels = (256, 512)

    def __init__(self) -> None:
        super().__init__()
        self.lateral5 = ConvBNAct(512, 256, 1, act="leaky")  # cfg layer 27
        self.out5 = ConvBNAct(256, 512, 3, act="leaky")  # cfg layer 28
        self.reduce5 = ConvBNAct(256, 128, 1, act="leaky")  # cfg layer 32
        self.out4 = ConvBNAct(384, 256, 3, act="leaky")  # cfg layer 35

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        _, c4, c5 = feats
        x5 = self.lateral5(c5)
        p5 = self.out5(x5)
        p4 = self.out4(torch.cat([upsample(self.reduce5(x5)), c4], 1))  # cfg route -1, 23
        return p4, p5


class TinyFPN3(TinyFPN):
    """YOLOv4-tiny-3l's neck (Darknet's yolov4-tiny-3l.cfg): the tiny FPN plus a stride-8 level.

    After p4, a 1x1 conv to 64 channels on p4 (cfg route -3), upsampled and joined to c3 (route -1, 15),
    then a 3x3 conv to 128. Small objects get an output at stride 8, as in yolov4, for 4.5% more
    parameters and 20% more FLOPs than yolov4-tiny (80 classes, 416 px).
    ``forward((c3 [B,128,H/8], c4, c5))`` -> ``(p3 [B,128,H/8], p4 [B,256,H/16], p5 [B,512,H/32])``.
    """

    out_channels = (128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        self.reduce4 = ConvBNAct(256, 64, 1, act="leaky")  # cfg layer 42
        self.out3 = ConvBNAct(192, 128, 3, act="leaky")  # cfg layer 45

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        p4, p5 = super().forward(feats)
        p3 = self.out3(torch.cat([upsample(self.reduce4(p4)), feats[0]], 1))  # cfg route -1, 15
        return p3, p4, p5
