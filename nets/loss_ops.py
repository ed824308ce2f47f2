"""For nets/loss.py: the gather of the raw maps.

The gather reads the objectness channel of every cell and all channels of the positives, and
builds each map's gradient in one buffer of the map's dtype and memory format (strided copies and
``index_select`` in place of advanced indexing, several times faster on the CPU). The loss terms
themselves are plain autograd: the whole loss is well under 1% of a yolov4 training step
(bench/bench_loss.py), so speed buys nothing there.
"""

from __future__ import annotations

import torch

from nets.box_coding import split_anchors


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
