"""Raw head maps to detections: decoding, NMS, and the two in one (:func:`detect`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import batched_nms

from nets.box_coding import decode_boxes, stride_index, to_per_anchor


@dataclass(frozen=True)
class DecodeSpec:
    """What decoding needs besides the maps: every anchor (w, h) in input pixels, and per level
    (stride ascending) its anchor indices, stride and Darknet ``scale_x_y``."""

    anchors: tuple[tuple[float, float], ...]
    anchor_masks: tuple[tuple[int, ...], ...]
    strides: tuple[int, ...]
    scale_x_y: tuple[float, ...]

    @classmethod
    def for_model(cls, model, anchors, scale_x_y_by_stride=(1.0, 1.0, 1.0)) -> DecodeSpec:
        """``scale_x_y_by_stride``: the config's values for strides 8, 16, 32 (each level takes its stride's)."""
        sxy = tuple(float(scale_x_y_by_stride[stride_index(s)]) for s in model.strides)
        return cls(tuple(tuple(map(float, a)) for a in anchors), tuple(model.anchor_masks), tuple(model.strides), sxy)


def decode_predictions(outputs: list[torch.Tensor], spec: DecodeSpec) -> torch.Tensor:
    """All levels' raw maps -> ``[B, N, 5 + C]``: box xyxy (input pixels), objectness and class probabilities."""
    anchors = torch.tensor(spec.anchors, dtype=torch.float32, device=outputs[0].device)
    out = []
    for raw, mask, stride, sxy in zip(outputs, spec.anchor_masks, spec.strides, spec.scale_x_y, strict=True):
        p = to_per_anchor(raw.float(), len(mask))  # [B, A, H, W, 5 + C]
        boxes = decode_boxes(p, anchors[list(mask)].to(p), stride, sxy)  # [B, A, H, W, 4]
        out.append(torch.cat((boxes, p[..., 4:].sigmoid()), -1).flatten(1, 3))  # [B, A*H*W, 5 + C]
    return torch.cat(out, 1)


def non_max_suppression(pred: torch.Tensor, conf_thres: float = 0.001, nms_iou: float = 0.5, max_det: int = 300,
                        agnostic: bool = False, classes: list[int] | None = None,
                        max_candidates: int = 30000) -> list[torch.Tensor]:
    """``[B, N, 5 + C]`` decoded predictions -> per image ``[K, 6]`` = (x1, y1, x2, y2, score, class).

    Score = objectness x the best class probability; boxes scoring below ``conf_thres`` are
    dropped, then :func:`torchvision.ops.batched_nms` per class (or across classes with
    ``agnostic``), keeping the ``max_det`` best. ``max_candidates`` bounds the work on an
    untrained model whose every box passes the threshold.
    """
    results = []
    for p in pred:  # [N, 5 + C]
        cls_prob, cls = p[:, 5:].max(1)
        score = p[:, 4] * cls_prob
        keep = score > conf_thres
        if classes is not None:
            keep &= torch.isin(cls, torch.as_tensor(classes, device=cls.device))
        boxes, score, cls = p[keep, :4], score[keep], cls[keep]
        if len(score) > max_candidates:
            top = score.topk(max_candidates).indices
            boxes, score, cls = boxes[top], score[top], cls[top]
        idx = batched_nms(boxes, score, torch.zeros_like(cls) if agnostic else cls, nms_iou)[:max_det]
        results.append(torch.cat((boxes[idx], score[idx, None], cls[idx, None].float()), 1))
    return results


def detect(outputs: list[torch.Tensor], spec: DecodeSpec, eval_cfg) -> list[torch.Tensor]:
    """Raw maps -> per image ``[K, 6]`` (x1, y1, x2, y2, score, class) in input pixels, with the
    configured threshold and NMS (``eval_cfg``: utils.config.schema.EvalConfig)."""
    pred = decode_predictions(outputs, spec)
    return non_max_suppression(pred, eval_cfg.conf_thres, eval_cfg.nms_iou, eval_cfg.max_det, eval_cfg.agnostic_nms)
