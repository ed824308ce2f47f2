"""YOLOLoss: the location, confidence and class terms, on the targets of nets/assign.py.

    loss = YOLOLoss.from_config(cfg, num_classes, anchors, strides, anchor_masks)
    total, terms = loss(maps, targets)      # terms: "loc", "conf", "cls"; the counts "num_pos", "collisions"

``maps`` are the model's raw outputs by stride ascending; ``targets [M, 6]`` are
``(image index, class, x1, y1, x2, y2)`` in input pixels.

The confidence (objectness) term takes one of four forms, chosen once from the config
(:func:`objectness_form`): BCE over the kept cells (positives and the negatives not ignored),
or with ``focal_loss`` the documents' focal form (Lin et al. 2017)
``-alpha_t (1 - p_t)^gamma log(p_t)``, alpha_t and (1 - p_t) built from ``obj_mask`` by
``torch.where`` (:func:`focal_bce`, the one place the formula is written; the class term calls
it too), or one of two IoU-aware forms, varifocal and quality focal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nets.assign import LevelTargets, TargetAssigner
from nets.box_coding import decode, stride_index
from nets.loss_ops import GatherMaps
from utils.boxes import IOU_KINDS, bbox_iou

NOMINAL_INPUT = 416  # the objectness weight scales with input area / 416^2 (the cfgs' training size)
NOMINAL_CLASSES = 80  # the class weight scales with num_classes / 80
FOCAL_FORMS = ("classic", "varifocal", "quality")  # loss.focal_form, used when loss.focal_loss is on


def focal_bce(logits: torch.Tensor, target: torch.Tensor, obj_mask: torch.Tensor, alpha: float,
              gamma: float) -> torch.Tensor:
    """The focal loss (Lin et al. 2017) ``-alpha_t (1 - p_t)^gamma log(p_t)``, element-wise from logits, as the
    focal-loss write-up for YoloV4 builds it: the BCE (``-log(p_t)`` for hard targets) times ``alpha_t`` and
    the modulation ``(1 - p_t)^gamma``, both taken from ``obj_mask`` (bool: the positive side) by ``torch.where``.
    For hard targets it equals ``torchvision.ops.sigmoid_focal_loss(..., reduction="none")``; with gamma = 0
    and alpha = 0.5 it is half the BCE."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    conf = logits.sigmoid()
    alpha_t = torch.where(obj_mask, alpha, 1 - alpha)
    modulation = torch.where(obj_mask, 1 - conf, conf) ** gamma
    return bce * alpha_t * modulation


def varifocal_loss(logits: torch.Tensor, q: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise varifocal loss (Zhang et al. 2021, VarifocalNet, eq. 2), from logits:
    ``BCE(p, q) * (q where q > 0, else alpha p^gamma)``, ``q`` the IoU target (0 on negatives)."""
    p = logits.sigmoid()
    return F.binary_cross_entropy_with_logits(logits, q, reduction="none") * torch.where(q > 0, q, alpha * p**gamma)


def quality_focal_loss(logits: torch.Tensor, q: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise quality focal loss (Li et al. 2020, Generalized Focal Loss, eq. 5), from logits:
    ``|q - p|^beta * BCE(p, q)``, ``q`` the IoU target (0 on negatives)."""
    return (q - logits.sigmoid()).abs() ** beta * F.binary_cross_entropy_with_logits(logits, q, reduction="none")


class Objectness:
    """A form of the objectness term. ``loss(logits, obj_mask, q)`` is element-wise on one level ``[B, A, H, W]``
    (``q``: the positives' IoU with their ground truth, detached, 0 elsewhere; read where ``needs_iou``);
    a level's sum over its kept cells is divided by ``denominator(kept, num_pos, q_sum)``; ``scale`` multiplies
    the whole term. ``keys``: the ``loss`` keys the form reads (the others are a config warning)."""

    name = ""
    keys: tuple[str, ...] = ()
    needs_iou = False
    scale = 1.0

    def __str__(self) -> str:  # "classic (iou_target 0.0, alpha 0.25, gamma 2.0, ratio 10.0, normalize mean)"
        return f"{self.name} ({', '.join(f'{f.name} {getattr(self, f.name)}' for f in dataclasses.fields(self))})"


@dataclass
class BCE(Objectness):
    """Plain BCE, the mean over the kept cells. With ``iou_target`` r > 0 the positives' target is
    ``(1 - r) + r * IoU`` (YOLOv5's ``gr``)."""

    iou_target: float = 0.0
    name = "BCE"
    keys = ("obj_iou_target",)

    @property
    def needs_iou(self) -> bool:
        return self.iou_target > 0

    def target(self, logits: torch.Tensor, obj_mask: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        r = self.iou_target
        return obj_mask.to(logits.dtype) if r == 0 else torch.where(obj_mask, (1 - r) + r * q, 0.0)

    def loss(self, logits: torch.Tensor, obj_mask: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, self.target(logits, obj_mask, q), reduction="none")

    def denominator(self, kept: int, num_pos: torch.Tensor, q_sum: torch.Tensor | None) -> float | torch.Tensor:
        return max(kept, 1)  # the mean over the kept cells (0 where none)


@dataclass
class Focal(BCE):
    """The documents' focal form, :func:`focal_bce` on the BCE's target; the mean over the kept cells (or with
    ``normalize: num_pos`` the sum over the positives' count, all levels), times ``ratio``."""

    alpha: float = 0.25
    gamma: float = 2.0
    ratio: float = 10.0
    normalize: str = "mean"
    name = "classic"
    keys = ("focal_alpha", "focal_gamma", "focal_loss_ratio", "focal_normalize", "obj_iou_target")

    @property
    def scale(self) -> float:
        return self.ratio

    def loss(self, logits: torch.Tensor, obj_mask: torch.Tensor, q: torch.Tensor | None) -> torch.Tensor:
        return focal_bce(logits, self.target(logits, obj_mask, q), obj_mask, self.alpha, self.gamma)

    def denominator(self, kept: int, num_pos: torch.Tensor, q_sum: torch.Tensor | None) -> float | torch.Tensor:
        return num_pos if self.normalize == "num_pos" else max(kept, 1)


@dataclass
class Varifocal(Objectness):
    """:func:`varifocal_loss`, divided by the sum of the positives' q (all levels, at least 1), as in VFNet."""

    alpha: float
    gamma: float
    name = "varifocal"
    keys = ("focal_alpha", "focal_gamma")
    needs_iou = True

    def loss(self, logits: torch.Tensor, obj_mask: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return varifocal_loss(logits, q, self.alpha, self.gamma)

    def denominator(self, kept: int, num_pos: torch.Tensor, q_sum: torch.Tensor) -> torch.Tensor:
        return q_sum


@dataclass
class QualityFocal(Objectness):
    """:func:`quality_focal_loss` with ``beta``, divided by the number of positives, as in GFL."""

    beta: float
    name = "quality"
    keys = ("focal_gamma",)
    needs_iou = True

    def loss(self, logits: torch.Tensor, obj_mask: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return quality_focal_loss(logits, q, self.beta)

    def denominator(self, kept: int, num_pos: torch.Tensor, q_sum: torch.Tensor) -> torch.Tensor:
        return num_pos


OBJECTNESS_KEYS = ("focal_form", "focal_alpha", "focal_gamma", "focal_loss_ratio", "focal_normalize", "obj_iou_target")


def objectness_form(focal_loss: bool, focal_form: str, focal_alpha: float, focal_gamma: float,
                    focal_loss_ratio: float, focal_normalize: str, obj_iou_target: float) -> Objectness:
    """The objectness form the ``loss`` keys choose: ``focal_loss`` off gives BCE, on gives ``focal_form``."""
    if focal_form not in FOCAL_FORMS:
        raise ValueError(f"focal_form must be one of {', '.join(FOCAL_FORMS)}, got '{focal_form}'")
    if focal_normalize not in ("mean", "num_pos"):
        raise ValueError(f"focal_normalize must be 'mean' or 'num_pos', got '{focal_normalize}'")
    if not 0.0 <= obj_iou_target <= 1.0:
        raise ValueError(f"obj_iou_target must be in [0, 1], got {obj_iou_target}")
    if not focal_loss:
        return BCE(obj_iou_target)
    if focal_form == "classic":
        return Focal(obj_iou_target, focal_alpha, focal_gamma, focal_loss_ratio, focal_normalize)
    if focal_form == "varifocal":
        return Varifocal(focal_alpha, focal_gamma)
    return QualityFocal(focal_gamma)


def unused_loss_keys(loss: dict) -> tuple[str, list[str]]:
    """``(form, keys)``: the objectness form a ``loss`` section (as a dict) chooses, and the keys of
    :data:`OBJECTNESS_KEYS` it sets that do nothing in that form (``focal_cls`` reads alpha and gamma too)."""
    form = objectness_form(**{k: loss[k] for k in ("focal_loss", *OBJECTNESS_KEYS)})
    reads = {*form.keys, *(("focal_form",) if loss["focal_loss"] else ()),
             *(("focal_alpha", "focal_gamma") if loss["focal_cls"] else ())}
    return form.name, [k for k in OBJECTNESS_KEYS if k not in reads]


class YOLOLoss(nn.Module):
    """YOLOv4 loss over all levels; see the module docstring.

    ``assigner``: the target assignment (nets/assign.py), whose levels (strides, anchors, decode scale) the
    loss reads; ``objectness``: the form of the confidence term (:func:`objectness_form`); ``input_size``
    scales the objectness weight. The keyword arguments are the rest of the config's ``loss`` section
    (utils/config/schema.py documents each); ``class_focal`` = (alpha, gamma) puts the class term in the
    focal form (``focal_cls``), None keeps it BCE. :meth:`build` and :meth:`from_config` make all three parts.
    """

    def __init__(self, assigner: TargetAssigner, objectness: Objectness, input_size: int, *, iou_type: str = "ciou",
                 box_weight: float = 0.05, obj_weight: float = 5.0, cls_weight: float = 1.0,
                 balance: Sequence[float] = (4.0, 1.0, 0.4), label_smoothing: float = 0.0,
                 class_focal: tuple[float, float] | None = None) -> None:
        super().__init__()
        if iou_type not in IOU_KINDS:
            raise ValueError(f"iou_type must be one of {IOU_KINDS}, got '{iou_type}'")
        self.assigner, self.objectness = assigner, objectness
        self.num_classes = assigner.num_classes
        # the geometry, read from the assigner: levels by stride, their anchors and decode scale
        self.strides, self.num_anchors, self.scale_x_y = assigner.strides, assigner.num_anchors, assigner.scale_x_y
        self.balance = [float(balance[stride_index(s)]) for s in self.strides]  # given per stride 8, 16, 32
        self.iou_type = iou_type
        self.box_weight = box_weight
        self.obj_weight = obj_weight * input_size**2 / NOMINAL_INPUT**2
        self.cls_weight = cls_weight * self.num_classes / NOMINAL_CLASSES
        self.label_smoothing, self.class_focal = label_smoothing, class_focal

    @classmethod
    def build(cls, num_classes: int, anchors: Sequence[Sequence[float]], strides: Sequence[int], input_size: int,
              anchor_masks: Sequence[Sequence[int]] | None = None, scale_x_y: Sequence[float] = (1.0, 1.0, 1.0),
              *, focal_loss: bool = False, focal_form: str = "classic", focal_alpha: float = 0.25,
              focal_gamma: float = 2.0, focal_loss_ratio: float = 10.0, focal_normalize: str = "mean",
              obj_iou_target: float = 0.0, focal_cls: bool = False, ignore_thresh: float = 0.5,
              multi_anchor_iou: float | None = None, assigner_cls: type[TargetAssigner] = TargetAssigner,
              **terms) -> YOLOLoss:
        """The loss, its assigner (an ``assigner_cls``) and its objectness form from the ``loss`` section's keys
        (``terms``: the weights, ``iou_type``, ``balance``, ``label_smoothing``)."""
        assigner = assigner_cls(num_classes, anchors, strides, anchor_masks, scale_x_y, ignore_thresh,
                                multi_anchor_iou)
        objectness = objectness_form(focal_loss, focal_form, focal_alpha, focal_gamma, focal_loss_ratio,
                                     focal_normalize, obj_iou_target)
        return cls(assigner, objectness, input_size, class_focal=(focal_alpha, focal_gamma) if focal_cls else None,
                   **terms)

    @classmethod
    def from_config(cls, cfg, num_classes: int, anchors: Sequence[Sequence[float]], strides: Sequence[int],
                    anchor_masks: Sequence[Sequence[int]] | None = None) -> YOLOLoss:
        """The one place where the config becomes loss arguments (``cfg``: utils.config.schema.Config)."""
        return cls.build(num_classes, anchors, strides, cfg.model.input_size, anchor_masks, cfg.model.scale_x_y,
                         **dataclasses.asdict(cfg.loss))

    # ------------------------------------------------------------------ terms

    def forward(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``outputs``: raw maps ``[B, A * (5 + C), H, W]`` by stride; ``targets [M, 6]``.

        Returns ``(total, terms)``: the weighted sum with gradient, and ``terms``: the weighted
        ``loc``, ``conf`` and ``cls`` detached, and the assignment's ``num_pos`` and ``collisions``
        (0-dim tensors). Computed in float32 from logits, also under autocast.
        """
        if len(outputs) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} maps (strides {self.strides}), got {len(outputs)}")
        device_type = outputs[0].device.type
        with torch.autocast(device_type, enabled=False):
            assignment = self.assigner([o.detach() for o in outputs], targets)
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
            if self.objectness.needs_iou:
                quality = [torch.zeros_like(x) for x in conf_logits]
            if positives:
                loc, cls, iou = self._positive_terms(positives, assignment.levels)
                if quality is not None:
                    for (i, _), part in zip(positives, iou.split([len(p) for _, p in positives]), strict=True):
                        tg = assignment.levels[i]
                        quality[i][tg.b, tg.a, tg.gy, tg.gx] = part.clamp(min=0)
            conf = self.conf_term(conf_logits, assignment.levels, num_pos, quality)
        total = loc + conf + cls
        return total, {"loc": loc.detach(), "conf": conf.detach(), "cls": cls.detach(),
                       "num_pos": assignment.stats["num_pos"], "collisions": assignment.stats["collisions"]}

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
        anchor = torch.cat([self.assigner.level_anchors(i)[tg.a] for (i, _), tg in zip(positives, tgs, strict=True)])  # [P, 2]
        boxes = decode(pos[:, :2], pos[:, 2:4], cell, anchor, stride, sxy)  # [P, 4]
        target_boxes = torch.cat([tg.boxes for tg in tgs])
        loc = ((1.0 - bbox_iou(boxes, target_boxes, self.iou_type)) * weight).sum() * self.box_weight
        classes = torch.cat([tg.classes for tg in tgs])
        cls = (self.cls_term(pos[:, 5:], classes) * weight).sum() * self.cls_weight
        return loc, cls, bbox_iou(boxes.detach(), target_boxes)

    def conf_term(self, conf_logits: Sequence[torch.Tensor], levels: Sequence[LevelTargets], num_pos: torch.Tensor,
                  quality: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The objectness (confidence) term in the chosen form (:class:`Objectness`).

        Per level, ``conf_logits [B, A, H, W]``: ``obj_mask`` marks the cells that own a ground
        truth, and the term is taken over the kept cells, ``noobj_mask | obj_mask`` (nets/assign.py's
        ``LevelTargets.kept``). Each level's sum over them is divided by the form's denominator (BCE:
        their count, the mean), times the level's balance; the levels' sum, times the form's scale
        (the classic focal form's ``focal_loss_ratio``) and the objectness weight. ``num_pos``: the
        positives' count over all levels (at least 1). ``quality``: per level the IoU of each
        positive's decoded box with its ground truth (detached, 0 elsewhere), for the forms that read it.
        """
        form = self.objectness
        q_sum = sum(q.sum() for q in quality).clamp(min=1.0) if quality is not None else None
        loss_conf = num_pos.new_zeros(())
        for lvl, (logits, tg) in enumerate(zip(conf_logits, levels, strict=True)):
            loss = form.loss(logits, tg.obj_mask, quality[lvl] if quality is not None else None)[tg.kept]
            loss_conf = loss_conf + loss.sum() / form.denominator(len(loss), num_pos, q_sum) * self.balance[lvl]
        return loss_conf * form.scale * self.obj_weight

    def cls_term(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Per positive ``[P]``: the mean BCE over its class logits ``[P, C]``, targets smoothed to
        y (1 - eps) + eps / 2 (or :func:`focal_bce` with ``focal_cls``)."""
        eps = self.label_smoothing
        target = F.one_hot(classes, self.num_classes).float() * (1 - eps) + eps / 2
        if self.class_focal is not None:
            return focal_bce(logits, target, target > 0.5, *self.class_focal).mean(1)
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)
