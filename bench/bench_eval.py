"""Evaluation benchmark: seconds for VOC mAP and COCO mAP, ours against pycocotools' COCOeval.

    python -m bench.bench_eval [--images 5000] [--classes 20] [--dets 100] [--json out.json]

A synthetic set: per image up to 8 ground-truth boxes (10% difficult) and ``--dets`` detections,
60% of them jittered copies of ground truth and the rest false alarms. Times are single runs
(COCOeval alone takes long); the COCO numbers of both are reported so that they can be compared.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit  # noqa: E402
from utils.data.records import Record  # noqa: E402
from utils.metrics.coco import coco_evaluate, coco_evaluate_fast  # noqa: E402
from utils.metrics.voc import voc_evaluate  # noqa: E402


def synthetic(n_img: int, num_classes: int, per_image: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for i in range(n_img):
        w, h = 500, 375
        g = int(rng.integers(1, 9))
        xy = rng.uniform(0, 1, (g, 2)) * [w, h]
        wh = np.exp(rng.uniform(np.log(8), np.log(250), (g, 2)))
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1).astype(np.float32)
        labels = rng.integers(0, num_classes, g)
        gts.append(Record(str(i), f"{i}.jpg", w, h, boxes, labels, rng.random(g) < 0.1))
        k = per_image
        src = rng.integers(0, g, k)
        true = rng.random(k) < 0.6
        xy = rng.uniform(0, 1, (k, 2)) * [w, h]
        bx = np.concatenate([xy, xy + rng.uniform(5, 200, (k, 2))], 1)
        bx[true] = boxes[src[true]] + rng.normal(0, 6, (int(true.sum()), 4))
        bx[:, 2:] = np.maximum(bx[:, 2:], bx[:, :2] + 1)
        lab = np.where(true, labels[src], rng.integers(0, num_classes, k))
        score = np.where(true, rng.uniform(0.2, 1.0, k), rng.uniform(0.0, 0.8, k))
        dets.append(np.concatenate([bx, score[:, None], lab[:, None]], 1).astype(np.float32))
    return dets, gts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--skip-pycocotools", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    dets, gts = synthetic(args.images, args.classes, args.dets)
    result = {"bench": "eval", "images": args.images, "classes": args.classes, "dets_per_image": args.dets}
    t0 = time.perf_counter()
    voc = voc_evaluate(dets, gts, args.classes)
    result["voc_s"] = round(time.perf_counter() - t0, 3)
    result["voc_map50"] = round(voc["map"], 6)
    t0 = time.perf_counter()
    ours = coco_evaluate_fast(dets, gts, args.classes)
    result["coco_fast_s"] = round(time.perf_counter() - t0, 3)
    result["coco_fast"] = ours
    if not args.skip_pycocotools:
        t0 = time.perf_counter()
        ref = coco_evaluate(dets, gts, [str(i) for i in range(args.classes)])
        result["pycocotools_s"] = round(time.perf_counter() - t0, 3)
        result["pycocotools"] = ref
        result["speedup"] = round(result["pycocotools_s"] / result["coco_fast_s"], 1)
        result["max_abs_difference"] = max(abs(ours[k] - ref[k]) for k in ref)
    return emit(result, args.json)


if __name__ == "__main__":
    main()
