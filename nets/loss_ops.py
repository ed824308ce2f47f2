"""The loss's element-wise kernels and the gather of the raw maps, for nets/loss.py.

The two loss Functions compute their gradient in the forward pass in closed form, so that the
backward pass is one multiplication instead of the backward of every element-wise step; the
gather builds each map's gradient in one buffer. All use the forms that are fast on the CPU:
``log`` in place of ``softplus``/``log1p`` (not vectorized there), arithmetic in place of
``where``, strided copies and ``index_select`` in place of advanced indexing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.postprocess import split_anchors


def focal_bce(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float,
              positive: torch.Tensor | None = None) -> torch.Tensor:
    """Element-wise focal loss from logits: ``BCE(logits, target) * alpha_t * (1 - p_t) ** gamma``.

    ``positive`` (bool, default ``target > 0.5``) selects the positive side:
    ``alpha_t = where(positive, alpha, 1 - alpha)``, ``1 - p_t = where(positive, 1 - p, p)``.
    For hard targets this equals ``torchvision.ops.sigmoid_focal_loss(..., reduction="none")``;
    with gamma = 0 and alpha = 0.5 it is half the BCE.
    """
    positive = target > 0.5 if positive is None else positive
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = logits.sigmoid()
    alpha_t = torch.where(positive, alpha, 1 - alpha)
    modulation = torch.where(positive, 1 - p, p) ** gamma
    return ce * alpha_t * modulation


def as_float(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as 0.0 / 1.0, read through uint8 (the direct bool cast is several times slower on the CPU)."""
    return mask.view(torch.uint8).float()


def neg_log_max(m: torch.Tensor) -> torch.Tensor:
    """``-log(max(m, 1 - m))`` for probabilities ``m``: with ``relu(x)`` added, ``softplus(x)`` at ``m = sigmoid(x)``,
    as exact in float32 as F.softplus and several times faster on the CPU, where softplus and log1p are not vectorized."""
    return torch.maximum(m, 1 - m).log_().neg_()


class BCEWithLogits(torch.autograd.Function):
    """Element-wise ``binary_cross_entropy_with_logits(x, y, reduction="none")`` = softplus(x) - x y,
    with the gradient (sigmoid(x) - y) in closed form; ``y`` takes no gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        m = x.sigmoid()
        ctx.save_for_backward(m - y)
        return x.clamp(min=0).add_(neg_log_max(m)).sub_(x * y)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None


class ObjectnessLoss(torch.autograd.Function):
    """Weighted sum of the BCE or focal loss of objectness logits, with the gradient in closed form.

    ``weight``: the kept cells (bool), or a float weight per cell that is zero where not kept.

    With ``z = sign x`` (sign = -1 on positives, +1 on negatives), ``m = sigmoid(z)`` is the
    probability given to the wrong answer (1 - p_t) and ``softplus(z) = -log(p_t)`` the
    cross-entropy, so the focal loss is ``alpha_t m^gamma softplus(z)`` and its derivative in x
    is ``sign alpha_t m^gamma (gamma (1 - m) softplus(z) + m)``; BCE is gamma = 0, alpha_t = 1.
    The forward pass computes that gradient at once, so the backward pass is one multiplication
    instead of the backward of each element-wise step.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, positive: torch.Tensor, weight: torch.Tensor, alpha: float | None,
                gamma: float) -> torch.Tensor:
        pos = as_float(positive).to(logits.dtype)
        sign = pos.mul(-2.0).add_(1.0)  # -1 on positives, +1 on negatives (arithmetic: where() is slower on the CPU)
        z = logits * sign
        m = z.sigmoid()  # 1 - p_t
        p_t = 1 - m
        ce = z.clamp(min=0).add_(neg_log_max(m))  # softplus(z) = -log(p_t)
        weight = as_float(weight) if weight.dtype == torch.bool else weight  # kept cells, or a weight per cell
        if alpha is None:  # BCE
            grad = m * weight
        else:
            weight = pos.mul_(2 * alpha - 1).add_(1 - alpha).mul_(weight)  # alpha_t = where(positive, alpha, 1 - alpha)
            if gamma:
                weight.mul_(m * m if gamma == 2 else m.pow(gamma))
                grad = weight * torch.addcmul(m, ce, p_t, value=gamma)  # alpha_t m^gamma (gamma (1 - m) ce + m)
            else:
                grad = weight * m
        ctx.save_for_backward(grad.mul_(sign))
        return torch.dot(ce.reshape(-1), weight.reshape(-1))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None


class GatherMaps(torch.autograd.Function):
    """From the raw maps ``[B, A * (5 + C), H, W]`` of every level, NCHW or channels_last: the objectness
    logits of all cells as one flat vector (per level ``[B, A, H, W]``, levels concatenated) and, per
    level, all channels of its positives ``[P, 5 + C]``; ``cells``: per level the positives' ``(b, a, gy, gx)``.

    The objectness channel is a strided copy, not an indexed gather; the positives are one
    index_select from the map's storage. The backward pass builds each map's gradient in one buffer
    of the map's dtype and memory format: one zero fill, a strided copy, one index_add.
    """

    @staticmethod
    def forward(ctx, num_anchors: int, cells: list[tuple[torch.Tensor, ...]], *raws: torch.Tensor):
        raws = tuple(r if r.is_contiguous(memory_format=_layout(r)) else r.contiguous() for r in raws)
        planes = [split_anchors(raw, num_anchors) for raw in raws]  # [B, A, 5 + C, H, W] views
        sizes = [p[:, :, 4].numel() for p in planes]
        obj = raws[0].new_empty(sum(sizes))
        for p, part in zip(planes, obj.split(sizes), strict=True):
            part.view_as(p[:, :, 4]).copy_(p[:, :, 4])
        index = [_storage_index(p, c) for p, c in zip(planes, cells, strict=True)]  # [P, 5 + C] each
        pos = [_storage(raw).index_select(0, i.view(-1)).view_as(i) for raw, i in zip(raws, index, strict=True)]
        ctx.save_for_backward(*index)
        ctx.num_anchors, ctx.sizes = num_anchors, sizes
        ctx.raws = [(raw.shape, raw.dtype, _layout(raw)) for raw in raws]
        return (obj, *pos)

    @staticmethod
    def backward(ctx, grad_obj: torch.Tensor, *grad_pos: torch.Tensor):
        grads = []
        for (shape, dtype, layout), g_obj, g_pos, index in zip(ctx.raws, grad_obj.split(ctx.sizes), grad_pos,
                                                               ctx.saved_tensors, strict=True):
            grad = torch.empty(shape, dtype=dtype, device=grad_obj.device, memory_format=layout).zero_()
            plane = split_anchors(grad, ctx.num_anchors)[:, :, 4]
            plane.copy_(g_obj.view_as(plane))
            _storage(grad).index_add_(0, index.view(-1), g_pos.reshape(-1).to(dtype))
            grads.append(grad)
        return (None, None, *grads)


def _layout(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D tensor stored so (and not also contiguous), else the contiguous format."""
    cl = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _storage(t: torch.Tensor) -> torch.Tensor:
    """A dense tensor's elements as a flat view, in storage order (any memory format)."""
    return t.as_strided((t.numel(),), (1,))


def _storage_index(plane: torch.Tensor, cells: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Storage offsets ``[P, 5 + C]`` of every channel of the cells ``(b, a, gy, gx)`` in a ``[B, A, 5 + C, H, W]`` view."""
    b, a, gy, gx = cells
    sb, sa, sc, sy, sx = plane.stride()
    channel = torch.arange(plane.shape[2], device=plane.device) * sc
    return (b * sb + a * sa + gy * sy + gx * sx)[:, None] + channel
