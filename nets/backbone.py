"""CSPDarknet53 (YOLOv4) and CSPDarknet53-tiny (YOLOv4-tiny), as in Darknet's yolov4.cfg and yolov4-tiny.cfg.

Submodules are created in the order the cfg lists their convolutions, and each
forward runs them in that order (nets/darknet.py relies on it).
"""

from __future__ import annotations

import torch
from torch import nn

from nets.common import ConvBNAct


class ResBlock(nn.Module):
    """1x1 conv to ``hidden``, 3x3 conv back to ``c``, plus the input (cfg ``[shortcut] from=-3``)."""

    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(c, hidden, 1)
        self.conv2 = ConvBNAct(hidden, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class CSPStage(nn.Module):
    """A cross-stage-partial stage of CSPDarknet53 (Wang et al. 2020, CSPNet).

    downsample (3x3, stride 2) -> two 1x1 branches: ``part1`` is kept aside, ``part2``
    goes through ``n`` residual blocks and a 1x1 ``transition``; their concatenation
    ``[part2, part1]`` (cfg ``route -1,-k``) is merged by a 1x1 ``merge`` conv.
    The first stage keeps full width in its branches (64 channels, blocks of hidden 32).
    """

    def __init__(self, c_in: int, c_out: int, n: int, first: bool = False) -> None:
        super().__init__()
        c_branch = c_out if first else c_out // 2
        self.downsample = ConvBNAct(c_in, c_out, 3, 2)
        self.part1 = ConvBNAct(c_out, c_branch, 1)
        self.part2 = ConvBNAct(c_out, c_branch, 1)
        self.blocks = nn.Sequential(*[ResBlock(c_branch, c_out // 2 if first else c_branch) for _ in range(n)])
        self.transition = ConvBNAct(c_branch, c_branch, 1)
        self.merge = ConvBNAct(2 * c_branch, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        kept = self.part1(x)
        x = self.transition(self.blocks(self.part2(x)))
        return self.merge(torch.cat([x, kept], 1))


class CSPDarknet53(nn.Module):
    """Stem (3x3, 32) and five CSP stages of 1, 2, 8, 8, 4 residual blocks, Mish throughout.

    ``forward(x [B, 3, H, W]) -> (c3 [B, 256, H/8, W/8], c4 [B, 512, H/16, W/16], c5 [B, 1024, H/32, W/32])``.
    """

    channels = (256, 512, 1024)

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3)
        self.stages = nn.ModuleList([
            CSPStage(32, 64, 1, first=True),  # stride 2
            CSPStage(64, 128, 2),  # stride 4
            CSPStage(128, 256, 8),  # stride 8  -> c3 (cfg layer 54)
            CSPStage(256, 512, 8),  # stride 16 -> c4 (cfg layer 85)
            CSPStage(512, 1024, 4),  # stride 32 -> c5 (cfg layer 104)
        ])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x = self.stages[1](self.stages[0](x))
        c3 = self.stages[2](x)
        c4 = self.stages[3](c3)
        c5 = self.stages[4](c4)
        return c3, c4, c5


class TinyStage(nn.Module):
    """A CSP stage of CSPDarknet53-tiny (LeakyReLU).

    3x3 conv -> the second half of its channels (cfg ``route layers=-1 groups=2 group_id=1``)
    -> two 3x3 convs whose outputs are concatenated ``[b, a]`` -> 1x1 ``transition``;
    the stage output is ``[x, transition]`` (cfg ``route -6,-1``), before the max-pool.
    """

    def __init__(self, c_in: int, c: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(c_in, c, 3, act="leaky")
        self.conv_a = ConvBNAct(c // 2, c // 2, 3, act="leaky")
        self.conv_b = ConvBNAct(c // 2, c // 2, 3, act="leaky")
        self.transition = ConvBNAct(c, c, 1, act="leaky")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (the concatenation [B, 2c, H, W], the transition output [B, c, H, W])."""
        x = self.conv(x)
        a = self.conv_a(x.chunk(2, dim=1)[1])  # group_id=1: the second half
        b = self.conv_b(a)
        t = self.transition(torch.cat([b, a], 1))
        return torch.cat([x, t], 1), t


class CSPDarknet53Tiny(nn.Module):
    """Two stride-2 convs and three tiny CSP stages separated by 2x2 max-pools, then a 3x3 conv.

    ``forward(x [B, 3, H, W]) -> (c3 [B, 128, H/8, W/8], c4 [B, 256, H/16, W/16], c5 [B, 512, H/32, W/32])``;
    c3 and c4 are the second and third stages' transition outputs (cfg layers 15 and 23). yolov4-tiny.cfg
    reads c4 and c5; yolov4-tiny-3l.cfg reads c3 too.
    """

    channels = (128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(3, 32, 3, 2, act="leaky"), ConvBNAct(32, 64, 3, 2, act="leaky"))
        self.stages = nn.ModuleList([TinyStage(64, 64), TinyStage(128, 128), TinyStage(256, 256)])
        self.pool = nn.MaxPool2d(2, 2)
        self.conv = ConvBNAct(512, 512, 3, act="leaky")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x, _ = self.stages[0](x)
        x, c3 = self.stages[1](self.pool(x))
        x, c4 = self.stages[2](self.pool(x))
        c5 = self.conv(self.pool(x))
        return c3, c4, c5
