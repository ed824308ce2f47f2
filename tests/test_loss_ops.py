"""The focal formula (nets/loss.py's focal_bce, also the class term's) against torchvision, and nets/loss_ops.py's map
gather against plain indexing, gradients included."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from nets.loss import focal_bce
from nets.loss_ops import GatherMaps


def test_focal_bce_matches_torchvision_elementwise() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, generator=g, dtype=torch.float64)
    target = (torch.rand(500, generator=g) > 0.7).double()
    torch.testing.assert_close(focal_bce(logits, target, target > 0.5, 0.25, 2.0), sigmoid_focal_loss(logits, target, 0.25, 2.0))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_gather_maps_equals_plain_indexing_with_gradients(layout) -> None:
    # the objectness logits and the positives' channels, and the maps' gradients, against autograd
    # through plain indexing of the [B, A, 5 + C, H, W] views (the obj channel is also a positive's)
    g = torch.Generator().manual_seed(4)
    n_a, per = 3, 7
    maps = [torch.randn(2, n_a * per, h, h, generator=g).contiguous(memory_format=layout) for h in (8, 4)]
    cells = [tuple(torch.randint(0, n, (5,), generator=g) for n in (2, n_a, h, h)) for h in (8, 4)]
    x, ref_x = [m.clone().requires_grad_() for m in maps], [m.clone().requires_grad_() for m in maps]
    obj, *pos = GatherMaps.apply(n_a, cells, *x)
    views = [r.view(2, n_a, per, *r.shape[2:]) for r in ref_x]
    ref_obj = torch.cat([v[:, :, 4].reshape(-1) for v in views])
    ref_pos = [v[b, a, :, gy, gx] for v, (b, a, gy, gx) in zip(views, cells, strict=True)]
    torch.testing.assert_close(obj, ref_obj)
    for p, r in zip(pos, ref_pos, strict=True):
        torch.testing.assert_close(p, r)
    w_obj = torch.randn(obj.shape, generator=g)
    w_pos = [torch.randn(p.shape, generator=g) for p in pos]
    ((obj * w_obj).sum() + sum((p * w).sum() for p, w in zip(pos, w_pos, strict=True))).backward()
    ((ref_obj * w_obj).sum() + sum((p * w).sum() for p, w in zip(ref_pos, w_pos, strict=True))).backward()
    for a, b in zip(x, ref_x, strict=True):
        torch.testing.assert_close(a.grad, b.grad)
