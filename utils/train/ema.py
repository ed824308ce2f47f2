"""The exponential moving average of the weights that evaluation and ``best.pt`` use."""

from __future__ import annotations

import torch

from utils.runtime import unwrap


class ModelEMA:
    """Exponential moving average of a model's weights and buffers.

    The decay ramps up as ``decay * (1 - exp(-updates / tau))``, so the average follows the
    fast-changing early weights closely and smooths later (as in the YOLOv5 / Ultralytics
    trainers). Evaluation and ``best.pt`` use the average.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        import copy

        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    def current_decay(self) -> float:
        import math

        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        msd = unwrap(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])
