"""Target assignment for YOLOLoss: which (level, anchor, cell) owns each ground truth, and which
negatives the objectness term ignores. No gradient flows here.

    assigner = TargetAssigner(num_classes, anchors, strides, anchor_masks, scale_x_y, ignore_thresh)
    assignment = assigner(maps, targets)   # Assignment: per level obj_mask, ignore_mask, positives

The kept cells of the objectness term, ``noobj_mask | obj_mask``, are named once: ``LevelTargets.kept``.

Two definitions of the ignore mask, tested equal (tests/test_assign.py, against a plain per-box
loop as well): :meth:`TargetAssigner._overlapping_dense`, every cell's decoded box against every
ground truth of its image, obviously right and slow; and :meth:`TargetAssigner._overlapping`,
the fast path, which decodes only the cells that can reach the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nets.box_coding import LevelSpec, decode_boxes, decode_wh, decode_xy, split_anchors
from utils.boxes import bbox_iou, shape_iou


@dataclass
class LevelTargets:
    """What the assignment gives one level (A anchors, an H x W grid).

    ``obj_mask [B, A, H, W]``: cells that own a ground truth (positives).
    ``ignore_mask [B, A, H, W]``: negatives left out of the conf term (their decoded box
    overlaps a ground truth of the same image by more than ``ignore_thresh``).
    ``b, a, gy, gx [P]``: the positives' indices; ``boxes [P, 4]`` their target boxes (xyxy,
    input pixels); ``classes [P]`` their class indices.
    """

    obj_mask: torch.Tensor
    ignore_mask: torch.Tensor
    b: torch.Tensor
    a: torch.Tensor
    gy: torch.Tensor
    gx: torch.Tensor
    boxes: torch.Tensor
    classes: torch.Tensor

    @property
    def noobj_mask(self) -> torch.Tensor:
        """``[B, A, H, W]``: the negatives the objectness term keeps (neither positive nor ignored)."""
        return ~self.ignore_mask & ~self.obj_mask

    @property
    def kept(self) -> torch.Tensor:
        """``[B, A, H, W]``: the cells the objectness term is taken over, ``noobj_mask | obj_mask``."""
        return self.noobj_mask | self.obj_mask


@dataclass
class Assignment:
    levels: list[LevelTargets]
    stats: dict[str, torch.Tensor]  # num_pos, collisions, ignored, invalid_targets (0-dim tensors)


def _flat_layout(preds: Sequence[torch.Tensor]) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """The flat cell index over every level of ``preds`` (per level ``[B, A, 5 + C, H, W]``): each level's
    ``(H, W)``, its number of cells ``B * A * H * W`` and its offset, levels concatenated by stride."""
    hws = [(p.shape[3], p.shape[4]) for p in preds]
    sizes = [p.shape[0] * p.shape[1] * h * w for p, (h, w) in zip(preds, hws, strict=True)]
    return hws, sizes, [sum(sizes[:i]) for i in range(len(sizes))]



class TargetAssigner(nn.Module):
    """Ground truths to (level, anchor, cell), and the negatives the confidence term ignores (no grad).

    Returns an :class:`Assignment` whose meaning is fixed here: per level, ``obj_mask`` the
    positives (target 1 for objectness), ``ignore_mask`` the negatives left out of the
    objectness term, and the positives' indices, target boxes and classes; the loss only
    consumes it (nets/loss.py).

    ``anchors``: every anchor ``(w, h)`` in input pixels, smallest first (the anchors file);
    ``anchor_masks``: which anchors each level uses (default: consecutive groups); ``strides``:
    one per level, ascending; ``scale_x_y``: Darknet's per-stride decode scale (strides 8, 16, 32).
    """

    def __init__(self, num_classes: int, anchors: Sequence[Sequence[float]], strides: Sequence[int],
                 anchor_masks: Sequence[Sequence[int]] | None = None, scale_x_y: Sequence[float] = (1.0, 1.0, 1.0),
                 ignore_thresh: float = 0.5, multi_anchor_iou: float | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.spec = LevelSpec.of(anchors, strides, anchor_masks, scale_x_y)  # the levels, as decoding reads them
        self.strides, self.anchor_masks = self.spec.strides, self.spec.anchor_masks
        self.num_anchors, self.scale_x_y = self.spec.num_anchors, list(self.spec.scale_x_y)
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(-1, 2), persistent=False)
        used = sorted({i for m in self.anchor_masks for i in m})
        self.register_buffer("anchor_used", torch.zeros(len(anchors), dtype=torch.bool).index_fill_(0, torch.tensor(used), True),
                             persistent=False)
        for lvl, m in enumerate(self.anchor_masks):  # per-level anchors (w, h), kept on the module's device
            self.register_buffer(f"anchors{lvl}", self.anchors[list(m)].clone(), persistent=False)
        # every (level, anchor slot) of the masks: its anchor in the anchors file, its level, its slot
        slots = [(k, lvl, a) for lvl, m in enumerate(self.anchor_masks) for a, k in enumerate(m)]
        self.register_buffer("slots", torch.tensor(slots, dtype=torch.long).t().contiguous(), persistent=False)  # [3, E]
        self.ignore_thresh = ignore_thresh
        self.multi_anchor_iou = multi_anchor_iou

    @classmethod
    def from_config(cls, cfg, num_classes: int, anchors: Sequence[Sequence[float]], strides: Sequence[int],
                    anchor_masks: Sequence[Sequence[int]] | None = None) -> TargetAssigner:
        """The assigner a run's loss uses (``cfg``: utils.config.schema.Config)."""
        return cls(num_classes, anchors, strides, anchor_masks, cfg.model.scale_x_y, cfg.loss.ignore_thresh,
                   cfg.loss.multi_anchor_iou)

    def level_anchors(self, level: int) -> torch.Tensor:
        """``[A, 2]`` anchors (w, h) in input pixels of one level."""
        return getattr(self, f"anchors{level}")

    def forward(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor) -> Assignment:
        return self.assign(outputs, targets)

    @torch.no_grad()
    def assign(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor) -> Assignment:
        """Match ground truths to (level, anchor, cell) and mark the ignored negatives.

        ``outputs``: the raw maps ``[B, A * (5 + C), H, W]`` (only the box logits are read,
        for the ignore mask); ``targets [M, 6]``.

        Each ground truth goes to the anchor of best shape IoU among the anchors the levels
        use, at the cell holding its centre, on every level whose mask holds that anchor;
        with ``multi_anchor_iou`` also to every used anchor whose shape IoU exceeds it
        (Darknet's iou_thresh). Two ground truths on one (image, anchor, cell): the larger
        shape IoU wins, ties to the earlier target; the losers are counted as collisions.
        """
        preds = [split_anchors(o, self.num_anchors) for o in outputs]  # [B, A, 5 + C, H, W] views, any float dtype
        device = preds[0].device
        batch = preds[0].shape[0]
        t = targets.to(device, torch.float32).reshape(-1, 6)
        wh = t[:, 4:6] - t[:, 2:4]
        valid = (wh > 0).all(1) & (t[:, 1] >= 0) & (t[:, 1] < self.num_classes) & (t[:, 0] >= 0) & (t[:, 0] < batch)
        valid &= torch.isfinite(t).all(1)
        invalid = (~valid).sum()
        keep = valid.nonzero().squeeze(1)
        t, wh = t.index_select(0, keep), wh.index_select(0, keep)  # [M, 6], [M, 2]
        img, cls = t[:, 0].long(), t[:, 1].long()
        centre = (t[:, 2:4] + t[:, 4:6]) / 2  # [M, 2]
        ious = shape_iou(wh, self.anchors).masked_fill(~self.anchor_used, -1.0)  # [M, K]
        chosen = F.one_hot(ious.argmax(1), len(self.anchors)).bool()  # [M, K]
        if self.multi_anchor_iou is not None:
            chosen |= ious > self.multi_anchor_iou

        overlapping = self._overlapping(preds, t, img)  # [N] over every level's cells, levels concatenated
        # all levels at once, in a flat index over every level's cells: ((b * A + a) * H + y) * W + x + level offset
        n_a = self.num_anchors
        hws, sizes, offsets = _flat_layout(preds)
        geo = torch.tensor([[w for _, w in hws], [h for h, _ in hws], offsets], device=device)  # [3, L]: width, height, offset
        stride_l = torch.tensor(self.strides, dtype=torch.float32, device=device)
        m_idx, e_idx = chosen.index_select(1, self.slots[0]).nonzero(as_tuple=True)  # candidates [N]: (target, slot)
        k_idx, lv, a_idx = (v.index_select(0, e_idx) for v in self.slots)
        iou = ious.view(-1).index_select(0, m_idx * ious.shape[1] + k_idx)  # shape IoU with its anchor [N]
        w_c, h_c, off_c = (v.index_select(0, lv) for v in geo)
        stride = stride_l.index_select(0, lv)
        gx = torch.minimum((centre[:, 0].index_select(0, m_idx) / stride).long(), w_c - 1).clamp_(min=0)
        gy = torch.minimum((centre[:, 1].index_select(0, m_idx) / stride).long(), h_c - 1).clamp_(min=0)
        b = img.index_select(0, m_idx)
        key = off_c + ((b * n_a + a_idx) * h_c + gy) * w_c + gx  # flat cell index [N]
        # per cell the candidate of largest shape IoU, ties to the earlier target: candidates come in
        # target order, so two stable sorts (IoU descending, then cell) put each cell's winner first
        order = torch.sort(iou, descending=True, stable=True).indices
        order = order.index_select(0, torch.sort(key.index_select(0, order), stable=True).indices)
        sorted_key = key.index_select(0, order)
        first = torch.ones_like(sorted_key, dtype=torch.bool)
        first[1:] = sorted_key[1:] != sorted_key[:-1]
        win = torch.zeros_like(first).index_fill_(0, order.masked_select(first), True)  # [N]; one winner per occupied cell
        obj = torch.zeros(sum(sizes), dtype=torch.bool, device=device).index_fill_(0, sorted_key.masked_select(first), True)
        ignore = overlapping & ~obj
        # the winners by level (stable: in target order within a level), then one LevelTargets per level
        order = win.nonzero().squeeze(1)
        order = order.index_select(0, torch.sort(lv.index_select(0, order), stable=True).indices)
        counts = torch.bincount(lv.index_select(0, order), minlength=len(preds)).tolist()
        m_win = m_idx.index_select(0, order)
        fields = [v.index_select(0, order) for v in (b, a_idx, gy, gx)]  # b, a, gy, gx
        fields += [t.index_select(0, m_win)[:, 2:6], cls.index_select(0, m_win)]  # boxes, classes
        levels = []
        for (h, w), obj_l, ign_l, *per in zip(hws, obj.split(sizes), ignore.split(sizes), *(f.split(counts) for f in fields),
                                            strict=True):
            levels.append(LevelTargets(obj_l.view(batch, n_a, h, w), ign_l.view(batch, n_a, h, w), *per))
        stats = {"num_pos": win.sum(), "collisions": (~win).sum(), "ignored": ignore.sum(), "invalid_targets": invalid}
        return Assignment(levels, stats)

    def _overlapping(self, preds: Sequence[torch.Tensor], t: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """Cells whose decoded box has IoU > ignore_thresh with a ground truth of its image: ``[N]`` over
        every level's cells (each level ``[B, A, H, W]`` flattened, levels concatenated).

        ``preds``: per level ``[B, A, 5 + C, H, W]``; ``t [M, 6]`` valid targets, ``img [M]`` their image indices.

        Non-finite predictions count as overlapping nothing. For ignore_thresh >= 0.5 only
        the cells near each ground truth are compared with it: IoU > 0.5 needs the
        intersection to exceed half of the predicted box, which puts the predicted centre
        strictly inside the ground truth (were it outside along y, the intersection would be
        at most half the box's height times its width), and a cell's prediction can only be
        centred within ``(s - 1) / 2`` cells of the cell. Of those (ground truth, cell, anchor)
        triples, only the ones whose predicted width and height are each within a factor
        ignore_thresh of the ground truth's get a decoded box and an IoU (see below why IoU >
        thresh needs that). All levels go through one pass, in a flat index over every level's
        cells. Below 0.5 every cell is compared with every box of its image.
        """
        if self.ignore_thresh < 0.5 or len(t) == 0:
            return torch.cat([self._overlapping_dense(lvl, pred, t, img).reshape(-1) for lvl, pred in enumerate(preds)])
        batch, n_a = preds[0].shape[:2]
        dev = t.device
        hws, sizes, offsets = _flat_layout(preds)
        # index arithmetic in int32 (several times faster than int64 on the CPU) while the indices fit
        i32 = torch.int32 if 2 * sum(sizes) < 2**31 else torch.int64
        anchors_l = torch.stack([self.level_anchors(i) for i in range(len(preds))])  # [L, A, 2]
        # xy logits and predicted widths and heights of every cell, levels concatenated in the flat index
        txy = torch.empty(2 * sum(sizes), device=dev)  # per level [B, A, 2, H, W] at 2 x its offset
        pw, ph = torch.empty(sum(sizes), device=dev), torch.empty(sum(sizes), device=dev)
        for i, (pred, (h, w), off, n) in enumerate(zip(preds, hws, offsets, sizes, strict=True)):
            txy[2 * off: 2 * (off + n)].view(batch, n_a, 2, h, w).copy_(pred[:, :, :2])
            for c, out in ((0, pw), (1, ph)):
                side = decode_wh(pred[:, :, 2 + c].float(), anchors_l[i, :, c, None, None])  # [B, A, H, W]
                out[off: off + n].view_as(side).copy_(side)
        # Below, every table is component-major (one contiguous vector per quantity): element-wise
        # ops on the columns of an [N, k] tensor are several times slower on the CPU.
        # One row per (level, ground truth), level-major: the range of cells its predictions could come from.
        n_lv, m = len(preds), len(t)
        lv = torch.arange(n_lv, device=dev).repeat_interleave(m)  # [R]
        geo = torch.tensor([[w for _, w in hws], [h for h, _ in hws], [h * w for h, w in hws], offsets], dtype=i32, device=dev)
        w_r, h_r, hw_r, off_r = (v.index_select(0, lv) for v in geo)  # width, height, cells per plane, level offset
        per_level = torch.tensor([self.strides, self.scale_x_y], dtype=torch.float32, device=dev)  # [2, L]
        stride, sxy = (v.index_select(0, lv) for v in per_level)
        margin = (sxy - 1) / 2
        gt = t[:, 2:6].t().repeat(1, n_lv)  # [4, R]: x1, y1, x2, y2
        last_x, last_y = w_r.float() - 1, h_r.float() - 1  # clamped before the int32 cast: any coordinate is safe
        x0 = torch.minimum(torch.floor(gt[0] / stride - margin).clamp_(min=0), last_x).to(i32)
        x1 = torch.minimum(torch.floor(gt[2] / stride + margin).clamp_(min=0), last_x).to(i32)
        y0 = torch.minimum(torch.floor(gt[1] / stride - margin).clamp_(min=0), last_y).to(i32)
        y1 = torch.minimum(torch.floor(gt[3] / stride + margin).clamp_(min=0), last_y).to(i32)
        nx, ny = x1 - x0 + 1, y1 - y0 + 1
        plane = img.to(i32).repeat(n_lv) * n_a  # b * A
        # One line per (row, y in the range): the range's cells of that y are nx consecutive flat indices.
        # index_select throughout: several times faster than advanced indexing on the CPU.
        line_row = torch.repeat_interleave(torch.arange(len(lv), device=dev), ny)  # [Ln]
        first_line = torch.cumsum(ny, 0, dtype=i32) - ny
        x0_l, y0_l, first_l, nx_l, w_l, hw_l, off_l, plane_l = (
            v.index_select(0, line_row) for v in (x0, y0, first_line, nx, w_r, hw_r, off_r, plane))
        y_l = y0_l + torch.arange(len(line_row), dtype=i32, device=dev) - first_l
        base_l = off_l + plane_l * hw_l + y_l * w_l + x0_l  # flat index of the line's first cell, anchor 0
        start_l = torch.cumsum(nx_l, 0, dtype=i32) - nx_l  # the line's first pair
        # (line, cell) pairs [P]: pair p is the line's cell dx = p - start, at flat index base + dx
        line = torch.repeat_interleave(torch.arange(len(line_row), device=dev), nx_l)  # [P]
        p = torch.arange(len(line), dtype=i32, device=dev)
        cell0 = (base_l - start_l).index_select(0, line) + p
        cell = torch.arange(n_a, dtype=i32, device=dev)[:, None] * hw_l.index_select(0, line) + cell0  # [A, P] flat
        # IoU > thresh needs each side within a factor thresh of the ground truth's (w > thresh W, as
        # I <= w min(h, H) and I (1 + thresh) > thresh (w h + W H); and W > thresh w alike)
        th = self.ignore_thresh
        near = None
        for side, lo, hi in ((pw, 0, 2), (ph, 1, 3)):
            pair = side.index_select(0, cell.view(-1)).view_as(cell)  # [A, P]
            gt_side = (gt[hi] - gt[lo]).index_select(0, line_row).index_select(0, line)  # [P]
            # bounds widened by 1e-6 so that rounding cannot drop a pair that passes the exact test
            ok = (pair > gt_side * (th * (1 - 1e-6))) & (pair < gt_side * ((1 + 1e-6) / th))  # NaN: False
            near = ok if near is None else near.logical_and_(ok)
        # the (pair, anchor) candidates [Q] that pass the size test get a decoded box and an IoU
        nz = near.view(-1).nonzero().squeeze(1)  # into [A, P]
        n_p = len(line)
        a_q = sum((nz >= k * n_p).long() for k in range(1, n_a))  # nz // P, without a division
        p_q = nz - a_q * n_p
        flat = cell.view(-1).index_select(0, nz)  # [Q]
        l_q = line.index_select(0, p_q)
        start_q, x0_q, y_q, hw_q, w_q, off_q, plane_q, r = (
            v.index_select(0, l_q) for v in (start_l, x0_l, y_l, hw_l, w_l, off_l, plane_l, line_row))
        x_q = x0_q + (p_q.to(i32) - start_q)
        # logit c of the cell in ``txy``: 2 * (level offset + plane (b * A + a) * H * W) + c * H * W + y * W + x
        channel = torch.arange(2, dtype=i32, device=dev)[:, None] * hw_q  # [2, Q]
        xy_idx = (2 * (off_q + (plane_q + a_q.to(i32)) * hw_q) + y_q * w_q + x_q) + channel
        txy_q = txy.index_select(0, xy_idx.view(-1)).view(2, -1)  # [2, Q]: tx, ty
        s_q, sxy_q = (v.index_select(0, lv.index_select(0, r)) for v in per_level)
        xy = decode_xy(txy_q, torch.stack((x_q, y_q)), s_q, sxy_q)  # [2, Q]
        wh = torch.stack((pw.index_select(0, flat), ph.index_select(0, flat)))  # [2, Q]
        boxes = torch.cat((xy - wh / 2, xy + wh / 2))  # [4, Q]
        hit = bbox_iou(boxes.t(), torch.stack([v.index_select(0, r) for v in gt]).t()) > th  # [Q]
        return torch.zeros(sum(sizes), dtype=torch.bool, device=dev).index_fill_(0, flat.masked_select(hit).long(), True)

    def _overlapping_dense(self, lvl: int, pred: torch.Tensor, t: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """``_overlapping`` for one level, every cell against every ground truth of its image."""
        batch, n_a, _, h, w = pred.shape
        if len(t) == 0:
            return torch.zeros(batch, n_a, h, w, dtype=torch.bool, device=pred.device)
        stride, sxy = self.strides[lvl], self.scale_x_y[lvl]
        box_logits = pred[:, :, :4].float().permute(0, 1, 3, 4, 2)  # [B, A, H, W, 4]
        boxes = decode_boxes(box_logits, self.level_anchors(lvl), stride, sxy).reshape(batch, -1, 4)  # [B, A*H*W, 4]
        gt_boxes, gt_valid = self._per_image(t, img, batch)  # [B, G, 4], [B, G]
        overlap = bbox_iou(boxes[:, :, None], gt_boxes[:, None]).masked_fill(~gt_valid[:, None], 0.0)  # [B, A*H*W, G]
        return (overlap.amax(2) > self.ignore_thresh).view(batch, n_a, h, w)  # NaN compares False

    @staticmethod
    def _per_image(t: torch.Tensor, img: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth boxes padded per image: ``[B, G, 4]`` and a validity mask ``[B, G]``."""
        counts = torch.bincount(img, minlength=batch)  # [B]
        g = max(int(counts.max()), 1) if len(t) else 1
        order = torch.argsort(img, stable=True)
        start = torch.cumsum(counts, 0) - counts  # [B]
        slot = torch.arange(len(t), device=t.device) - start[img[order]]
        out = torch.zeros(batch, g, 4, device=t.device)
        valid = torch.zeros(batch, g, dtype=torch.bool, device=t.device)
        out[img[order], slot] = t[order, 2:6]
        valid[img[order], slot] = True
        return out, valid
