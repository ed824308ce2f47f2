"""VOC AP (07 11-point and all-point) and the per-class table.

Inputs, per image, in original image pixels:

- detections ``[K, 6]`` = (x1, y1, x2, y2, score, class);
- ground truth: anything with ``boxes [G, 4]``, ``labels [G]``, ``difficult [G]`` (a
  :class:`utils.data.records.Record`), plus ``width`` / ``height`` for COCO.

VOC rules (VOCevaldet.m of the VOC devkit): detections of a class sorted by score; each is
matched to the ground truth it overlaps most; IoU >= ``iou_thr`` with a ground truth not yet
taken is a TP, with one already taken a FP (duplicate), below it a FP; a difficult ground truth
makes its detections neither.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from utils.boxes import box_iou_np
from utils.data.records import Record


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07: bool = False) -> float:
    """Area under the PR curve: VOC2007's 11-point interpolation, or every point (VOC2010 and later)."""
    if use_07:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _padded(per_image: list[np.ndarray], width: int, fill: float = 0.0) -> np.ndarray:
    """Ragged per-image rows -> ``[I, G_max, width]`` padded with ``fill``."""
    g = max([len(x) for x in per_image] + [1])
    out = np.full((len(per_image), g, width), fill, np.float64)
    for i, x in enumerate(per_image):
        out[i, : len(x)] = np.asarray(x, np.float64).reshape(-1, width)
    return out


@dataclass
class ClassPR:
    """The PR data of one class: TP / FP flags and scores in score order, and the positives count."""

    tp: np.ndarray
    fp: np.ndarray
    scores: np.ndarray
    npos: int

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        tp, fp = np.cumsum(self.tp), np.cumsum(self.fp)
        recall = tp / max(self.npos, 1)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        return recall, precision


def voc_match(dets: Sequence[np.ndarray], gts: Sequence, cls: int, iou_thr: float = 0.5) -> ClassPR:
    """TP / FP flags of class ``cls`` under the VOC rules, all images at once (no loop over boxes)."""
    gt_boxes = [g.boxes[g.labels == cls] for g in gts]
    gt_diff = [g.difficult[g.labels == cls] for g in gts]
    npos = int(sum((~d).sum() for d in gt_diff))
    rows = [(i, d[d[:, 5] == cls]) for i, d in enumerate(dets) if len(d)]
    img = np.concatenate([np.full(len(d), i) for i, d in rows]) if rows else np.zeros(0, int)
    det = np.concatenate([d for _, d in rows]) if rows else np.zeros((0, 6))
    order = np.argsort(-det[:, 4], kind="mergesort")
    img, det = img[order], det[order]
    gb = _padded(gt_boxes, 4, np.nan)  # [I, G, 4]; NaN padding never overlaps
    gd = _padded([d.astype(float)[:, None] for d in gt_diff], 1)[..., 0] > 0  # [I, G]
    iou = np.nan_to_num(box_iou_np(det[:, None, :4].astype(np.float64), gb[img]), nan=-1.0)  # [D, G]
    best = iou.argmax(1) if len(det) else np.zeros(0, int)
    ovmax = iou[np.arange(len(det)), best] if len(det) else np.zeros(0)
    hit = ovmax >= iou_thr
    ignored = hit & gd[img, best]
    candidate = hit & ~ignored
    key = img * gb.shape[1] + best
    first = np.zeros(len(det), bool)
    idx = np.nonzero(candidate)[0]
    _, first_pos = np.unique(key[idx], return_index=True)  # earliest (highest score) detection per ground truth
    first[idx[first_pos]] = True
    keep = ~ignored
    return ClassPR(first[keep].astype(float), (~first)[keep].astype(float), det[keep, 4], npos)


def voc_evaluate(dets: Sequence[np.ndarray], gts: Sequence, num_classes: int, iou_thr: float = 0.5,
                 score_thr: float = 0.5) -> dict:
    """Per-class VOC AP (07 11-point and all-point), precision / recall / F1 at ``score_thr`` and at the score
    of the best mean F1 (:func:`best_f1`), and the means.

    Classes without ground truth get NaN and are left out of the means.
    """
    out = {k: np.full(num_classes, np.nan) for k in ("ap07", "ap", "precision", "recall", "f1")}
    out["npos"] = np.zeros(num_classes, int)
    out["curves"] = []
    for c in range(num_classes):
        pr = voc_match(dets, gts, c, iou_thr)
        out["npos"][c] = pr.npos
        recall, precision = pr.curve()
        out["curves"].append((recall, precision, pr.scores))
        if pr.npos == 0:
            continue
        out["ap07"][c] = voc_ap(recall, precision, use_07=True)
        out["ap"][c] = voc_ap(recall, precision, use_07=False)
        n = int((pr.scores >= score_thr).sum())
        tp = pr.tp[:n].sum()
        out["precision"][c] = tp / n if n else 0.0
        out["recall"][c] = tp / pr.npos
        p, r = out["precision"][c], out["recall"][c]
        out["f1"][c] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    valid = out["npos"] > 0
    out.update(best_f1(out["curves"], out["npos"]))
    out["map07"] = float(out["ap07"][valid].mean()) if valid.any() else float("nan")
    out["map"] = float(out["ap"][valid].mean()) if valid.any() else float("nan")
    return out


F1_GRID = np.linspace(0.0, 1.0, 1001)  # score thresholds searched for the best F1


def pr_on_grid(curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
               npos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 ``[C, len(F1_GRID)]`` of each class at every score threshold of F1_GRID (zeros for
    classes without ground truth). ``curves``: per class (recall, precision, scores) in score order."""
    p, r = np.zeros((len(curves), len(F1_GRID))), np.zeros((len(curves), len(F1_GRID)))
    for c, (recall, precision, scores) in enumerate(curves):
        if npos[c] == 0 or not len(scores):
            continue
        n = len(scores) - np.searchsorted(scores[::-1], F1_GRID, side="left")  # detections with score >= t
        has = n > 0
        p[c, has], r[c, has] = precision[n[has] - 1], recall[n[has] - 1]
        p[c, ~has] = 1.0  # no detection scores that high: precision undefined, taken as 1 (as Ultralytics draws it)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return p, r, f1


def best_f1(curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]], npos: np.ndarray) -> dict[str, Any]:
    """The score threshold where the F1 averaged over the classes with ground truth is highest (on a 0.001
    grid, the lowest such score), and each class's precision and recall there (as Ultralytics reports P and R)."""
    valid = npos > 0
    p, r, f1 = pr_on_grid(curves, npos)
    k = int(f1[valid].mean(0).argmax()) if valid.any() else 0
    nan = np.full(len(curves), np.nan)
    return {"f1_score_thres": float(F1_GRID[k]), "p_at_best_f1": np.where(valid, p[:, k], nan),
            "r_at_best_f1": np.where(valid, r[:, k], nan)}


def confusion_matrix(dets: Sequence[np.ndarray], gts: Sequence, num_classes: int, score_thr: float = 0.5,
                     iou_thr: float = 0.5) -> np.ndarray:
    """``[C + 1, C + 1]`` counts, rows the predicted class, columns the true one, the last of each the background:
    detections with score >= ``score_thr`` are paired with ground truths at IoU >= ``iou_thr`` (each at most once,
    the highest IoUs first, whatever the classes); a detection without a partner counts in the background column,
    a ground truth without one in the background row. Pairs with a difficult ground truth are left out."""
    m = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    bg = num_classes
    for det, gt in zip(dets, gts, strict=True):
        det = np.asarray(det, np.float64).reshape(-1, 6)
        det = det[det[:, 4] >= score_thr]
        iou = box_iou_np(det[:, None, :4], np.asarray(gt.boxes, np.float64)[None]) if len(det) and len(gt.boxes) else \
            np.zeros((len(det), len(gt.boxes)))
        d_used, g_used = np.zeros(len(det), bool), np.zeros(len(gt.boxes), bool)
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            d, g = divmod(int(flat), len(gt.boxes))
            if iou[d, g] < iou_thr:
                break
            if d_used[d] or g_used[g]:
                continue
            d_used[d] = g_used[g] = True
            if not gt.difficult[g]:
                m[int(det[d, 5]), int(gt.labels[g])] += 1
        for d in np.nonzero(~d_used)[0]:
            m[int(det[d, 5]), bg] += 1
        for g in np.nonzero(~g_used & ~np.asarray(gt.difficult, bool))[0]:
            m[bg, int(gt.labels[g])] += 1
    return m


def per_class_table(result: dict, records: Sequence[Record], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of (class, images, objects, P and R at the best-F1 score, AP50 11-point, AP50 all-point, AP50-95)."""
    rows = []
    for c, name in enumerate(class_names):
        images = sum(1 for r in records if ((r.labels == c) & ~r.difficult).any())
        rows.append({"class": name, "images": images, "objects": int(result["voc"]["npos"][c]),
                     "p": float(result["voc"]["p_at_best_f1"][c]), "r": float(result["voc"]["r_at_best_f1"][c]),
                     "ap50_07": float(result["voc"]["ap07"][c]), "ap50": float(result["voc"]["ap"][c]),
                     "ap50_95": float(result["coco"]["per_class_AP50_95"][c])})
    return rows


def format_table(rows: list[dict], result: dict) -> str:
    """The per-class table that eval.py and a run's final evaluation print; P and R at the best-F1 score."""

    def f(v: float) -> str:
        return "   -  " if math.isnan(v) else f"{v:6.3f}"

    lines = [f"{'class':<16}{'images':>7}{'objects':>8}  {'P':>6}  {'R':>6}  {'AP50-07':>7}  {'AP50':>6}  {'AP50-95':>7}"]
    for r in rows:
        lines.append(f"{r['class']:<16}{r['images']:>7}{r['objects']:>8}  {f(r['p'])}  {f(r['r'])}  "
                     f"{f(r['ap50_07']):>7}  {f(r['ap50'])}  {f(r['ap50_95']):>7}")
    lines.append(f"{'all':<16}{'':>7}{sum(r['objects'] for r in rows):>8}  {f(result['precision'])}  "
                 f"{f(result['recall'])}  {f(result['map50_07']):>7}  {f(result['map50'])}  {f(result['map50_95']):>7}")
    c = result["coco"]
    lines.append(f"P and R at score {result['voc']['f1_score_thres']:.3f} (the best mean F1). COCO-style: AP50-95 "
                 f"{c['AP50_95']:.4f}  AP50 {c['AP50']:.4f}  AP75 {c['AP75']:.4f}  APs {c['APs']:.4f}  "
                 f"APm {c['APm']:.4f}  APl {c['APl']:.4f}")
    return "\n".join(lines)
