"""nets/loss_ops.py: the loss kernels and the map gather against torch, torchvision and plain indexing, gradients included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from nets.loss_ops import BCEWithLogits, GatherMaps, ObjectnessLoss, focal_bce


@pytest.mark.parametrize(("alpha", "gamma"), [(None, 0.0), (0.25, 2.0), (0.6, 0.0), (0.5, 1.5)])
def test_objectness_closed_form_gradient_on_extreme_logits(alpha: float | None, gamma: float) -> None:
    # logits from -100 to 100 on both sides: the sum and its gradient equal autograd through the
    # reference forms (BCE-with-logits; torchvision's sigmoid_focal_loss), also where p_t rounds to 1
    logits = torch.cat((torch.linspace(-100, 100, 41), torch.randn(200, generator=torch.Generator().manual_seed(0)) * 4))
    positive = torch.arange(len(logits)) % 3 == 0
    kept = torch.arange(len(logits)) % 7 != 1
    x = logits.clone().requires_grad_()
    got = ObjectnessLoss.apply(x, positive, kept, alpha, gamma)
    got.backward()
    ref_x = logits.clone().requires_grad_()
    if alpha is None:
        ref = F.binary_cross_entropy_with_logits(ref_x[kept], positive[kept].float(), reduction="sum")
    else:
        ref = sigmoid_focal_loss(ref_x[kept], positive[kept].float(), alpha, gamma, reduction="sum")
    ref.backward()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(x.grad, ref_x.grad)


def test_class_bce_closed_form_equals_torch_on_extreme_logits() -> None:
    # logits from -100 to 100 (0 included) against hard and smoothed targets: values and gradients equal
    # autograd through F.binary_cross_entropy_with_logits, also where sigmoid rounds to 0 or 1
    logits = torch.cat((torch.linspace(-100, 100, 41), torch.randn(200, generator=torch.Generator().manual_seed(1)) * 4))
    target = torch.tensor([0.0, 1.0, 0.05, 0.95, 0.5]).repeat(len(logits) // 5 + 1)[: len(logits)]
    x, ref_x = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    got = BCEWithLogits.apply(x, target)
    ref = F.binary_cross_entropy_with_logits(ref_x, target, reduction="none")
    torch.testing.assert_close(got, ref)
    weights = torch.rand(len(logits), generator=torch.Generator().manual_seed(2))
    (got * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad)


def test_focal_bce_matches_torchvision_elementwise() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, generator=g, dtype=torch.float64)
    target = (torch.rand(500, generator=g) > 0.7).double()
    torch.testing.assert_close(focal_bce(logits, target, 0.25, 2.0), sigmoid_focal_loss(logits, target, 0.25, 2.0))


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
