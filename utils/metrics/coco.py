"""COCO AP@[.5:.95] through pycocotools (:func:`coco_evaluate`) and a fast evaluation that reproduces
its numbers (:func:`coco_evaluate_fast`, tested equal to it): pycocotools' COCOeval rules, difficult
objects as ``iscrowd`` ignore regions. Inputs as in :mod:`utils.metrics.voc`, plus ``width`` / ``height``
per ground truth.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.boxes import coco_iou_np

COCO_IOUS = np.linspace(0.5, 0.95, 10)

COCO_RECALLS = np.linspace(0.0, 1.0, 101)

COCO_AREAS = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}

COCO_KEYS = ("AP50_95", "AP50", "AP75", "APs", "APm", "APl")



def _xywh(boxes: np.ndarray) -> np.ndarray:
    """xyxy -> xywh in float64, the numbers both COCO paths see."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)



def coco_ground_truth(gts: Sequence, class_names: Sequence[str]) -> dict:
    """A COCO-format ground-truth dict: image ids 1..I, true sizes, area = box area, difficult as iscrowd."""
    images, anns = [], []
    for i, g in enumerate(gts):
        images.append({"id": i + 1, "width": int(g.width), "height": int(g.height),
                       "file_name": str(getattr(g, "path", f"{i}.jpg"))})
        for box, label, diff in zip(_xywh(g.boxes), g.labels, g.difficult, strict=True):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(label) + 1, "bbox": box.tolist(),
                         "area": float(box[2] * box[3]), "iscrowd": int(diff)})
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
    return {"images": images, "annotations": anns, "categories": cats}



def coco_results(dets: Sequence[np.ndarray]) -> list[dict]:
    """Detections as a COCO results list (image ids 1..I, category id = class + 1, bbox xywh)."""
    out = []
    for i, d in enumerate(dets):
        for box, row in zip(_xywh(d[:, :4]), d, strict=True):
            out.append({"image_id": i + 1, "category_id": int(row[5]) + 1, "bbox": box.tolist(), "score": float(row[4])})
    return out



class ResultsFileError(ValueError):
    """A detections file that cannot be read as COCO results for these images and classes."""


def read_coco_results(results: Sequence[dict], gts: Sequence, num_classes: int, source: str = "") -> list[np.ndarray]:
    """A COCO results list (what :func:`coco_results` writes, or another detector's) as one ``[n, 6]`` array per
    image: x1, y1, x2, y2, score, class. ``image_id``: 1..I in the order of ``gts`` (ground_truth.json's ids), or
    the image's file name or stem; ``category_id``: class + 1."""
    if not isinstance(results, list):
        raise ResultsFileError(f"{source}: not a COCO results list (a JSON list of detections)")
    by_name = {}
    for i, g in enumerate(gts):
        by_name[Path(g.path).name] = by_name[Path(g.path).stem] = i
    rows: list[list[list[float]]] = [[] for _ in gts]
    for k, r in enumerate(results):
        try:
            image, category, (x, y, w, h), score = r["image_id"], int(r["category_id"]), r["bbox"], float(r["score"])
        except (KeyError, TypeError, ValueError):
            raise ResultsFileError(f"{source}: entry {k} is not a COCO result "
                                   f"({{image_id, category_id, bbox [x, y, w, h], score}}): {r!r}") from None
        i = image - 1 if isinstance(image, int) else by_name.get(str(image))
        if i is None or not 0 <= i < len(gts):
            raise ResultsFileError(f"{source}: entry {k} names image {image!r}, which is not in the split "
                                   f"(ids 1..{len(gts)} in its order, or file names)")
        if not 1 <= category <= num_classes:
            raise ResultsFileError(f"{source}: entry {k} has category_id {category}; the classes are 1..{num_classes}")
        rows[i].append([x, y, x + w, y + h, score, category - 1])
    return [np.asarray(d, np.float32).reshape(-1, 6) for d in rows]


def coco_evaluate(dets: Sequence[np.ndarray], gts: Sequence, class_names: Sequence[str]) -> dict[str, float]:
    """AP@[.5:.95], AP50, AP75, APs, APm, APl by pycocotools' COCOeval (-1 where undefined)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_ground_truth(gts, class_names)
        gt.createIndex()
        results = coco_results(dets)
        if not results:
            return dict.fromkeys(COCO_KEYS, 0.0)
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_KEYS, ev.stats[:6], strict=True)}



def _coco_match(d_pair, d_rank, d_box, g_pair, g_rank, g_box, g_crowd, g_area, thr):
    """COCOeval's greedy matching for every area range: {area: (matched [N, T], matched to an ignored gt [N, T])}.

    Only (image, class) pairs holding both detections and ground truth need it; they are
    processed in buckets of similar ground-truth counts, so that padding stays small. Within a
    bucket the loop runs over detection ranks, each step vectorized over pairs and thresholds.
    """
    n, t = len(d_pair), len(thr)
    out = {a: (np.zeros((n, t), bool), np.zeros((n, t), bool)) for a in COCO_AREAS}
    g_pairs, g_count = np.unique(g_pair, return_counts=True)
    both = np.isin(g_pairs, d_pair)
    g_pairs, g_count = g_pairs[both], g_count[both]
    for lo_g, hi_g in ((1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 1 << 30)):
        sel = (g_count >= lo_g) & (g_count <= hi_g)
        if not sel.any():
            continue
        pairs = g_pairs[sel]
        gmax = int(g_count[sel].max())
        p_of_g = np.searchsorted(pairs, g_pair)
        in_b = (p_of_g < len(pairs)) & (pairs[np.minimum(p_of_g, len(pairs) - 1)] == g_pair)
        gb = np.zeros((len(pairs), gmax, 4))
        gc = np.zeros((len(pairs), gmax), bool)
        ga = np.zeros((len(pairs), gmax))
        gv = np.zeros((len(pairs), gmax), bool)
        gb[p_of_g[in_b], g_rank[in_b]] = g_box[in_b]
        gc[p_of_g[in_b], g_rank[in_b]] = g_crowd[in_b]
        ga[p_of_g[in_b], g_rank[in_b]] = g_area[in_b]
        gv[p_of_g[in_b], g_rank[in_b]] = True
        p_of_d = np.searchsorted(pairs, d_pair)
        dets = np.nonzero((p_of_d < len(pairs)) & (pairs[np.minimum(p_of_d, len(pairs) - 1)] == d_pair))[0]
        rows_of_d = p_of_d[dets]
        iou = coco_iou_np(d_box[dets][:, None, :], gb[rows_of_d], gc[rows_of_d])[:, 0]  # [Nb, G]
        dmax = int(d_rank[dets].max()) + 1
        det_at = np.full((len(pairs), dmax), -1)
        det_at[rows_of_d, d_rank[dets]] = np.arange(len(dets))
        rev = np.arange(gmax)[::-1]
        for area_name, (lo, hi) in COCO_AREAS.items():
            matched, matched_ig = out[area_name]
            ig = gc | (ga < lo) | (ga > hi)  # [Pb, G] ignored ground truths
            taken = np.zeros((len(pairs), t, gmax), bool)
            for r in range(dmax):
                rows = np.nonzero(det_at[:, r] >= 0)[0]
                det = det_at[rows, r]  # bucket-local detection index
                iou_r = iou[det][:, None, :]  # [R, 1, G]
                free = ~(taken[rows] & ~gc[rows][:, None, :])  # [R, T, G]
                ok = free & gv[rows][:, None, :] & (iou_r >= thr[None, :, None])
                # COCOeval sorts the ignored ground truths last (stably) and stops at the first of them once it
                # holds a match: an ignored one is taken only when no other qualifies. Among the candidates it
                # keeps the last of equal maxima, in the original order within each group, as here.
                not_ig = ok & ~ig[rows][:, None, :]
                use = np.where(not_ig.any(-1, keepdims=True), not_ig, ok)
                last = gmax - 1 - np.argmax(np.where(use, iou_r, -1.0)[..., rev], -1)  # [R, T]
                found = use.any(-1)
                matched[dets[det]] = found
                matched_ig[dets[det]] = found & np.take_along_axis(ig[rows], last, 1)
                rr, tt = np.nonzero(found)
                taken[rows[rr], tt, last[rr, tt]] = True
    return out



def _interpolated_precision(tps: np.ndarray, fps: np.ndarray, npig: int) -> np.ndarray:
    """COCOeval's 101-point interpolated precision, per IoU threshold ``[T]``, of one class's detections in
    score order (``tps`` / ``fps`` ``[N, T]``: true and false positives) against ``npig`` ground truths."""
    tp_sum = np.cumsum(tps, 0).astype(float)
    fp_sum = np.cumsum(fps, 0).astype(float)
    nd = len(tps)
    q = np.zeros((tps.shape[1], len(COCO_RECALLS)))
    for ti in range(tps.shape[1]):  # no detections: every recall unreached, precision 0
        tp, fp = tp_sum[:, ti], fp_sum[:, ti]
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        idx = np.searchsorted(rc, COCO_RECALLS, side="left")
        n = int((idx < nd).sum())  # a prefix: COCOeval stops at the first recall it cannot reach
        q[ti, :n] = pr[idx[:n]]
    return q.mean(1)


def coco_evaluate_fast(dets: Sequence[np.ndarray], gts: Sequence, num_classes: int, max_det: int = 100) -> dict:
    """The numbers of :func:`coco_evaluate` without pycocotools' per-detection Python loops
    (plus ``per_class_AP50_95``, NaN for classes without ground truth).

    Same rules: per (image, class) detections sorted by score (stable) and cut to ``max_det``;
    for each IoU threshold each detection, in score order, takes the still-free ground truth
    (crowd ones are never used up) of highest IoU >= the threshold, preferring ground truths
    that are not ignored (ties to the later one, as COCOeval's loop does); unmatched detections
    outside the area range are ignored; 101-point interpolated precision.
    The matching loops over detection ranks (at most ``max_det``), each step vectorized over
    every (image, class) pair and every threshold.
    """
    t = len(COCO_IOUS)
    thr = COCO_IOUS  # COCOeval caps each at 1 - 1e-10, which leaves 0.5..0.95 as they are
    # ---- group detections and ground truths by (image, class): pair = image * C + class
    d_img = np.concatenate([np.full(len(d), i) for i, d in enumerate(dets)] + [np.zeros(0, int)])
    d_all = np.concatenate([np.asarray(d, np.float64).reshape(-1, 6) for d in dets] + [np.zeros((0, 6))])
    d_pair = d_img * num_classes + d_all[:, 5].astype(int)
    order = np.lexsort((-d_all[:, 4], d_pair))  # by pair, then score descending; lexsort is stable
    d_pair, d_all = d_pair[order], d_all[order]
    starts = np.searchsorted(d_pair, d_pair, side="left")
    d_rank = np.arange(len(d_pair)) - starts
    keep = d_rank < max_det
    d_pair, d_all, d_rank = d_pair[keep], d_all[keep], d_rank[keep]
    d_box = _xywh(d_all[:, :4])
    d_area = d_box[:, 2] * d_box[:, 3]

    g_img = np.concatenate([np.full(len(g.labels), i) for i, g in enumerate(gts)] + [np.zeros(0, int)])
    g_pair = g_img * num_classes + np.concatenate([np.asarray(g.labels, int) for g in gts] + [np.zeros(0, int)])
    g_box = np.concatenate([_xywh(g.boxes) for g in gts] + [np.zeros((0, 4))])
    g_crowd = np.concatenate([np.asarray(g.difficult, bool) for g in gts] + [np.zeros(0, bool)])
    g_order = np.argsort(g_pair, kind="mergesort")
    g_pair, g_box, g_crowd = g_pair[g_order], g_box[g_order], g_crowd[g_order]
    g_area = g_box[:, 2] * g_box[:, 3]
    g_rank = np.arange(len(g_pair)) - np.searchsorted(g_pair, g_pair, side="left")

    matches = _coco_match(d_pair, d_rank, d_box, g_pair, g_rank, g_box, g_crowd, g_area, thr)

    cls = d_all[:, 5].astype(int)
    g_cls = g_pair % num_classes
    stats = {}
    precision = {}
    for area_name, (lo, hi) in COCO_AREAS.items():
        matched, matched_ig = matches[area_name]
        out_of_range = (d_area < lo) | (d_area > hi)
        det_ig = matched_ig | (~matched & out_of_range[:, None])  # [N, T]
        # ---- accumulate per class: detections of all images (image order, then rank), stable by score
        g_ig_all = g_crowd | (g_area < lo) | (g_area > hi)
        prec = np.full((t, num_classes), -1.0)
        for k in range(num_classes):
            npig = int(((g_cls == k) & ~g_ig_all).sum())
            if npig == 0:
                continue
            sel = np.nonzero(cls == k)[0]  # already in (image, rank) order
            o = np.argsort(-d_all[sel, 4], kind="mergesort")
            sel = sel[o]
            prec[:, k] = _interpolated_precision(matched[sel] & ~det_ig[sel], ~matched[sel] & ~det_ig[sel], npig)
        precision[area_name] = prec
    all_p = precision["all"]

    def mean(p: np.ndarray) -> float:
        v = p[p > -1]
        return float(v.mean()) if v.size else -1.0

    stats["AP50_95"] = mean(all_p)
    stats["AP50"] = mean(all_p[0])
    stats["AP75"] = mean(all_p[5])
    stats["APs"], stats["APm"], stats["APl"] = (mean(precision[a]) for a in ("small", "medium", "large"))
    stats["per_class_AP50_95"] = [float(v) if v > -1 else float("nan") for v in all_p.mean(0)]
    return stats
