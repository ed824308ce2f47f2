"""YOLOLoss: the location, confidence and class terms, on the targets of nets/assign.py.

    loss = YOLOLoss(num_classes, anchors, strides, input_size, anchor_masks, **loss_config)
    total, terms = loss(maps, targets)      # terms = {"loc", "conf", "cls"}, detached

``maps`` are the model's raw outputs by stride ascending; ``targets [M, 6]`` are
``(image index, class, x1, y1, x2, y2)`` in input pixels.

The confidence term is BCE-with-logits over the kept cells (positives and the negatives
not ignored), or with ``focal_loss`` the focal form (Lin et al. 2017)
``-alpha_t (1 - p_t)^gamma log(p_t)``, with alpha_t and (1 - p_t) built from ``obj_mask``
by ``torch.where``, written out in :meth:`YOLOLoss.conf_term`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nets.assign import Assignment, LevelTargets, TargetAssigner
from nets.box_coding import decode, stride_index
from nets.loss_ops import GatherMaps, focal_bce
from utils.boxes import IOU_KINDS, bbox_iou

NOMINAL_INPUT = 416  # the objectness weight scales with input area / 416^2 (the cfgs' training size)
NOMINAL_CLASSES = 80  # the class weight scales with num_classes / 80
FOCAL_FORMS = ("classic", "varifocal", "quality")  # loss.focal_form, used when loss.focal_loss is on


def varifocal_loss(logits: torch.Tensor, q: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise varifocal loss (Zhang et al. 2021, VarifocalNet, eq. 2), from logits:
    ``BCE(p, q) * (q where q > 0, else alpha p^gamma)``, ``q`` the IoU target (0 on negatives)."""
    p = logits.sigmoid()
    return F.binary_cross_entropy_with_logits(logits, q, reduction="none") * torch.where(q > 0, q, alpha * p**gamma)


def quality_focal_loss(logits: torch.Tensor, q: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise quality focal loss (Li et al. 2020, Generalized Focal Loss, eq. 5), from logits:
    ``|q - p|^beta * BCE(p, q)``, ``q`` the IoU target (0 on negatives)."""
    return (q - logits.sigmoid()).abs() ** beta * F.binary_cross_entropy_with_logits(logits, q, reduction="none")


class YOLOLoss(nn.Module):
    """YOLOv4 loss over all levels; see the module docstring.

    ``anchors``: every anchor ``(w, h)`` in input pixels, smallest first (the anchors file);
    ``anchor_masks``: which anchors each level uses (default: consecutive groups);
    ``strides``: one per level, ascending. The keyword arguments are the ``loss`` section
    of the config (utils/config/schema.py documents each).
    """

    def __init__(self, num_classes: int, anchors: Sequence[Sequence[float]], strides: Sequence[int], input_size: int,
                 anchor_masks: Sequence[Sequence[int]] | None = None, scale_x_y: Sequence[float] = (1.0, 1.0, 1.0), *,
                 iou_type: str = "ciou", box_weight: float = 0.05, obj_weight: float = 5.0, cls_weight: float = 1.0,
                 balance: Sequence[float] = (4.0, 1.0, 0.4), focal_loss: bool = False, focal_alpha: float = 0.25,
                 focal_gamma: float = 2.0, focal_loss_ratio: float = 10.0, focal_normalize: str = "mean",
                 focal_cls: bool = False, label_smoothing: float = 0.0, ignore_thresh: float = 0.5,
                 multi_anchor_iou: float | None = None, obj_iou_target: float = 0.0,
                 focal_form: str = "classic") -> None:
        super().__init__()
        if iou_type not in IOU_KINDS:
            raise ValueError(f"iou_type must be one of {IOU_KINDS}, got '{iou_type}'")
        if focal_normalize not in ("mean", "num_pos"):
            raise ValueError(f"focal_normalize must be 'mean' or 'num_pos', got '{focal_normalize}'")
        if focal_form not in FOCAL_FORMS:
            raise ValueError(f"focal_form must be one of {', '.join(FOCAL_FORMS)}, got '{focal_form}'")
        if not 0.0 <= obj_iou_target <= 1.0:
            raise ValueError(f"obj_iou_target must be in [0, 1], got {obj_iou_target}")
        self.num_classes = num_classes
        self.assigner = TargetAssigner(num_classes, anchors, strides, anchor_masks, scale_x_y, ignore_thresh,
                                       multi_anchor_iou)
        # the geometry, read from the assigner: levels by stride, their anchors and decode scale
        self.strides, self.anchor_masks = self.assigner.strides, self.assigner.anchor_masks
        self.num_anchors, self.scale_x_y = self.assigner.num_anchors, self.assigner.scale_x_y
        self.balance = [float(balance[stride_index(s)]) for s in self.strides]  # given per stride 8, 16, 32
        self.iou_type = iou_type
        self.box_weight = box_weight
        self.obj_weight = obj_weight * input_size**2 / NOMINAL_INPUT**2
        self.cls_weight = cls_weight * num_classes / NOMINAL_CLASSES
        self.focal_loss, self.focal_alpha, self.focal_gamma = focal_loss, focal_alpha, focal_gamma
        self.focal_loss_ratio, self.focal_normalize, self.focal_cls = focal_loss_ratio, focal_normalize, focal_cls
        self.label_smoothing = label_smoothing
        self.obj_iou_target, self.focal_form = obj_iou_target, focal_form
        self.stats: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg, num_classes: int, anchors: Sequence[Sequence[float]], strides: Sequence[int],
                    anchor_masks: Sequence[Sequence[int]] | None = None) -> YOLOLoss:
        """The one place where the config becomes loss arguments (``cfg``: utils.config.schema.Config)."""
        return cls(num_classes, anchors, strides, cfg.model.input_size, anchor_masks, cfg.model.scale_x_y,
                   **dataclasses.asdict(cfg.loss))

    @property
    def anchors(self) -> torch.Tensor:
        """``[K, 2]`` every anchor (w, h) in input pixels, smallest first."""
        return self.assigner.anchors

    def level_anchors(self, level: int) -> torch.Tensor:
        """``[A, 2]`` anchors (w, h) in input pixels of one level."""
        return self.assigner.level_anchors(level)

    def assign(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor) -> Assignment:
        """The targets of ``outputs`` (nets.assign.TargetAssigner; a subclass may assign otherwise)."""
        return self.assigner(outputs, targets)

    # ------------------------------------------------------------------ assignment

    # ------------------------------------------------------------------ terms

    def forward(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``outputs``: raw maps ``[B, A * (5 + C), H, W]`` by stride; ``targets [M, 6]``.

        Returns ``(total, {"loc", "conf", "cls"})``: the weighted sum with gradient, and the
        weighted terms detached. Computed in float32 from logits, also under autocast.
        """
        if len(outputs) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} maps (strides {self.strides}), got {len(outputs)}")
        device_type = outputs[0].device.type
        with torch.autocast(device_type, enabled=False):
            assignment = self.assign([o.detach() for o in outputs], targets)
            zero = outputs[0].new_zeros((), dtype=torch.float32)
            loc, conf, cls = zero, zero, zero
            num_pos = assignment.stats["num_pos"].clamp(min=1).float()
            cells = [(tg.b, tg.a, tg.gy, tg.gx) for tg in assignment.levels]
            obj, *pos = GatherMaps.apply(self.num_anchors, cells, *outputs)  # all cells' objectness; [P, 5 + C] per level
            positives = [(i, p.float()) for i, p in enumerate(pos) if len(p)]  # (level, its positives' logits)
            conf_logits = [part.float().view_as(tg.obj_mask)  # per level [B, A, H, W]
                           for part, tg in zip(obj.split([tg.obj_mask.numel() for tg in assignment.levels]),
                                               assignment.levels, strict=True)]
            quality = None  # per level: the positives' IoU, 0 elsewhere; only the IoU-aware forms read it
            if self.obj_iou_target > 0 or (self.focal_loss and self.focal_form != "classic"):
                quality = [torch.zeros_like(x) for x in conf_logits]
            if positives:
                loc, cls, iou = self._positive_terms(positives, assignment.levels)
                for (i, _), part in zip(positives, iou.split([len(p) for _, p in positives]), strict=True):
                    if quality is not None:
                        tg = assignment.levels[i]
                        quality[i][tg.b, tg.a, tg.gy, tg.gx] = part.clamp(min=0)
            conf = self.conf_term(conf_logits, assignment.levels, num_pos, quality)
        self.stats = assignment.stats
        total = loc + conf + cls
        return total, {"loc": loc.detach(), "conf": conf.detach(), "cls": cls.detach()}

    def _positive_terms(self, positives: list[tuple[int, torch.Tensor]],
                        levels: list[LevelTargets]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loc and cls terms (per level the mean over its positives, summed over the levels), and
        the plain IoU of each positive's decoded box with its ground truth ``[P]`` (for the conf term).

        All levels' positives go through one decode, one IoU and one BCE; each positive is
        weighted by 1 / (its level's positive count), which gives the sum of per-level means.
        """
        pos = torch.cat([p for _, p in positives])  # [P, 5 + C]
        tgs = [levels[i] for i, _ in positives]
        counts = [len(p) for _, p in positives]
        repeats = torch.tensor(counts, device=pos.device)

        def per(values: list[float]) -> torch.Tensor:  # one value per level -> [P, 1]
            return torch.tensor(values, device=pos.device).repeat_interleave(repeats)[:, None]

        stride = per([float(self.strides[i]) for i, _ in positives])
        sxy = per([self.scale_x_y[i] for i, _ in positives])
        weight = per([1.0 / n for n in counts])[:, 0]  # [P]
        cell = torch.cat([torch.stack((tg.gx, tg.gy), -1) for tg in tgs]).to(pos.dtype)  # [P, 2]
        anchor = torch.cat([self.level_anchors(i)[tg.a] for (i, _), tg in zip(positives, tgs, strict=True)])  # [P, 2]
        boxes = decode(pos[:, :2], pos[:, 2:4], cell, anchor, stride, sxy)  # [P, 4]
        target_boxes = torch.cat([tg.boxes for tg in tgs])
        loc = ((1.0 - bbox_iou(boxes, target_boxes, self.iou_type)) * weight).sum() * self.box_weight
        classes = torch.cat([tg.classes for tg in tgs])
        cls = (self.cls_term(pos[:, 5:], classes) * weight).sum() * self.cls_weight
        return loc, cls, bbox_iou(boxes.detach(), target_boxes)

    def conf_term(self, conf_logits: Sequence[torch.Tensor], levels: Sequence[LevelTargets], num_pos: torch.Tensor,
                  quality: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The objectness (confidence) term, written as the focal-loss write-up for YoloV4 writes it.

        Per level, ``conf_logits [B, A, H, W]``: ``obj_mask`` marks the cells that own a ground
        truth (target 1), ``noobj_mask`` the negatives that are not ignored (target 0); the term
        is taken over ``noobj_mask | obj_mask``. Plain BCE, or with ``focal_loss`` (Lin et al.
        2017) ``-alpha_t (1 - p_t)^gamma log(p_t)``: the BCE times ``ratio = alpha_t (1 - p_t)^gamma``,
        both built from ``obj_mask`` with ``torch.where``. Normalized per level (the mean over
        the kept cells, or with ``focal_normalize: num_pos`` the sum over the positives' count),
        times the level's balance, summed over the levels, times the objectness weight and
        ``focal_loss_ratio``. The BCE is computed from the logits, stable for any value.

        ``quality``: per level ``[B, A, H, W]``, the IoU of each positive's decoded box with its
        ground truth (detached, 0 elsewhere). With ``obj_iou_target`` r > 0 the positives' target
        is ``(1 - r) + r * IoU`` (YOLOv5's ``gr``); ``focal_form: varifocal | quality`` replaces
        the focal form by :func:`varifocal_loss` or :func:`quality_focal_loss` (see
        :meth:`_iou_aware_conf`).
        """
        if self.focal_loss and self.focal_form != "classic":
            return self._iou_aware_conf(conf_logits, levels, num_pos, quality)
        alpha, gamma, r = self.focal_alpha, self.focal_gamma, self.obj_iou_target
        loss_conf = num_pos.new_zeros(())
        for lvl, (logits, tg) in enumerate(zip(conf_logits, levels, strict=True)):
            obj_mask = tg.obj_mask  # [B, A, H, W] bool
            noobj_mask = ~tg.ignore_mask & ~obj_mask
            target = obj_mask.to(logits.dtype) if r == 0 else torch.where(obj_mask, (1 - r) + r * quality[lvl], 0.0)
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # -log(p_t) for hard targets
            if self.focal_loss:
                conf = logits.sigmoid()
                ratio = torch.where(obj_mask, alpha, 1 - alpha) * torch.where(obj_mask, 1 - conf, conf) ** gamma
                loss = (bce * ratio)[noobj_mask | obj_mask]
            else:
                loss = bce[noobj_mask | obj_mask]
            if self.focal_loss and self.focal_normalize == "num_pos":
                level_loss = loss.sum() / num_pos
            else:
                level_loss = loss.sum() / max(len(loss), 1)  # the mean over the kept cells (0 where none)
            loss_conf = loss_conf + level_loss * self.balance[lvl]
        if self.focal_loss:
            loss_conf = loss_conf * self.focal_loss_ratio
        return loss_conf * self.obj_weight

    def _iou_aware_conf(self, conf_logits: Sequence[torch.Tensor], levels: Sequence[LevelTargets], num_pos: torch.Tensor,
                        quality: Sequence[torch.Tensor]) -> torch.Tensor:
        """The varifocal or quality focal objectness term: the target is ``q``, the positives' IoU (0 on
        negatives), over the same kept cells; varifocal normalized by the sum of the positives' q (at
        least 1), quality by the number of positives, as in GFL. Times the level's balance and the
        objectness weight (``focal_loss_ratio`` belongs to the classic form only)."""
        # at least 1, as num_pos is: a batch without positives must not divide the negatives' loss by ~0
        q_sum = sum(q.sum() for q in quality).clamp(min=1.0) if self.focal_form == "varifocal" else num_pos
        loss_conf = num_pos.new_zeros(())
        for lvl, (logits, tg) in enumerate(zip(conf_logits, levels, strict=True)):
            kept = tg.obj_mask | ~tg.ignore_mask
            q = quality[lvl]
            if self.focal_form == "varifocal":
                loss = varifocal_loss(logits, q, self.focal_alpha, self.focal_gamma)
            else:
                loss = quality_focal_loss(logits, q, self.focal_gamma)
            loss_conf = loss_conf + loss[kept].sum() / q_sum * self.balance[lvl]
        return loss_conf * self.obj_weight

    def cls_term(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Per positive ``[P]``: the mean BCE over its class logits ``[P, C]``, targets smoothed to
        y (1 - eps) + eps / 2 (or the focal form with ``focal_cls``)."""
        eps = self.label_smoothing
        target = F.one_hot(classes, self.num_classes).float() * (1 - eps) + eps / 2
        if self.focal_cls:
            return focal_bce(logits, target, self.focal_alpha, self.focal_gamma).mean(1)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)
