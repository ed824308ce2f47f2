"""Building blocks shared by the backbone, neck and head: Conv-BN-activation and its fusion."""

from __future__ import annotations

import torch
from torch import nn

# Darknet's BN epsilon (cuDNN path, AlexeyAB/darknet convolutional_layer.c) so that
# imported .weights give Darknet's outputs; momentum is PyTorch's convention (1 - Darknet's 0.99).
BN_EPS = 1e-5
BN_MOMENTUM = 0.03


def activation(name: str) -> nn.Module:
    """``mish`` (CSPDarknet53), ``leaky`` (LeakyReLU 0.1, neck and tiny) or ``linear``."""
    if name == "mish":
        return nn.Mish(inplace=True)
    if name == "leaky":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "linear":
        return nn.Identity()
    raise ValueError(f"unknown activation '{name}' (mish | leaky | linear)")


class ConvBNAct(nn.Module):
    """Darknet's ``[convolutional]`` with ``batch_normalize=1``: conv (no bias) -> BN -> activation.

    Padding is ``k // 2`` (Darknet's ``pad=1``), so a stride-1 conv keeps the size and a
    stride-2 conv halves it.
    """

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, act: str = "mish") -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BN into the conv (inference only): w' = w * g / sqrt(v + eps), b' = beta - g * m / sqrt(v + eps)."""
        if isinstance(self.bn, nn.Identity):
            return
        conv, bn = self.conv, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [C_out]
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          bias=True).to(conv.weight.device, conv.weight.dtype)
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv = fused
        self.bn = nn.Identity()
