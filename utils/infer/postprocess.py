"""Raw head maps to detections: decoding, NMS, and the two in one (:func:`detect`)."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from nets.box_coding import LevelSpec, decode_boxes, to_per_anchor


def decode_predictions(outputs: list[torch.Tensor], spec: LevelSpec) -> torch.Tensor:
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


def detect(outputs: list[torch.Tensor], spec: LevelSpec, eval_cfg) -> list[torch.Tensor]:
    """Raw maps -> per image ``[K, 6]`` (x1, y1, x2, y2, score, class) in input pixels, with the
    configured threshold and NMS (``eval_cfg``: utils.config.schema.EvalConfig)."""
    pred = decode_predictions(outputs, spec)
    return non_max_suppression(pred, eval_cfg.conf_thres, eval_cfg.nms_iou, eval_cfg.max_det, eval_cfg.agnostic_nms)
