"""YOLO output convolutions: one 1x1 conv with bias (no BN, linear) per level to A * (5 + C) channels."""

from __future__ import annotations

import math

import torch
from torch import nn


class YOLOHead(nn.Module):
    """``forward([p_i [B, c_i, H_i, W_i]]) -> [raw_i [B, A * (5 + C), H_i, W_i]]``, one map per level.

    Per anchor the channels are ``(tx, ty, tw, th, objectness, class_1 .. class_C)``, anchors
    one after the other, as in Darknet's ``[yolo]`` layer.
    """

    def __init__(self, in_channels: tuple[int, ...], num_anchors: int, num_classes: int,
                 obj_prior: float = 0.01, cls_prior: float | None = None) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.convs = nn.ModuleList([nn.Conv2d(c, num_anchors * (5 + num_classes), 1) for c in in_channels])
        self.init_priors(obj_prior, cls_prior)

    @torch.no_grad()
    def init_priors(self, obj_prior: float = 0.01, cls_prior: float | None = None) -> None:
        """Start every prediction at a prior instead of at p = 0.5.

        Nearly all cells are background, so a start at p = 0.5 makes the first iterations'
        confidence loss huge and unstable; Lin et al. 2017 (RetinaNet, section 3.3) set the
        final bias to -log((1 - pi) / pi) with pi = 0.01 and a N(0, 0.01) weight fill, so that
        the outputs start at the prior. Classes start at about 1 / C (1 / (C + 1), finite for
        C = 1); box offsets start at 0 (cell centre, anchor size).
        """
        cls_prior = 1.0 / (self.num_classes + 1) if cls_prior is None else cls_prior
        for conv in self.convs:
            nn.init.normal_(conv.weight, std=0.01)
            b = conv.bias.view(self.num_anchors, 5 + self.num_classes)  # [A, 5 + C]
            b[:, :4] = 0.0
            b[:, 4] = math.log(obj_prior / (1 - obj_prior))
            b[:, 5:] = math.log(cls_prior / (1 - cls_prior))

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [conv(f) for conv, f in zip(self.convs, feats, strict=True)]
