"""Anchors for your data: k-means on the training boxes' sizes with 1 - IoU as the distance.

    python tools/kmeans_anchors.py --config voc.yaml [-k 9] [--out model_data/my_anchors.txt] [--seed 0]

Box sizes are taken as the network sees them (each image letterboxed to ``model.input_size``),
difficult objects left out. The distance between a box and an anchor is 1 - their IoU with
centres aligned (Redmon & Farhadi 2017, YOLO9000, section 2), so large boxes do not dominate
as they would under Euclidean distance. Seeded k-means++ start, then Lloyd iterations with
the mean; deterministic for a seed. Prints the mean IoU of each box with its best anchor and
the best possible recall (share of boxes whose best anchor IoU reaches ``--bpr-iou``), for the
new anchors and for the config's current ones, and writes a Darknet-style anchors file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.boxes import shape_iou_np  # noqa: E402
from utils.config.files import read_anchors, read_classes  # noqa: E402
from utils.config.load import add_config_args, load_config  # noqa: E402
from utils.config.schema import (
    NUM_ANCHORS,  # noqa: E402
    ConfigError,  # noqa: E402
)
from utils.console import one_line_errors  # noqa: E402
from utils.data.splits import load_records  # noqa: E402
from utils.data.synthetic import ensure_shapes  # noqa: E402


def anchor_fitness(wh: np.ndarray, anchors: np.ndarray, bpr_iou: float = 0.5) -> tuple[float, float]:
    """(mean best IoU, best possible recall at ``bpr_iou``)."""
    best = shape_iou_np(wh, anchors).max(1)
    return float(best.mean()), float((best >= bpr_iou).mean())


def kmeans_iou(wh: np.ndarray, k: int, seed: int = 0, iters: int = 300) -> np.ndarray:
    """``k`` anchors ``[k, 2]`` (sorted by area) for the sizes ``wh [N, 2]``."""
    wh = np.asarray(wh, np.float64)
    if len(wh) < k:
        raise ValueError(f"need at least {k} boxes for {k} anchors, got {len(wh)}")
    rng = np.random.default_rng(seed)
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):  # k-means++: next centre drawn in proportion to the squared distance
        d = (1 - shape_iou_np(wh, np.array(centres)).max(1)) ** 2
        centres.append(wh[rng.choice(len(wh), p=d / d.sum())] if d.sum() > 0 else wh[rng.integers(len(wh))])
    centres = np.array(centres)
    assign = None
    for _ in range(iters):
        new = shape_iou_np(wh, centres).argmax(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            if (assign == j).any():
                centres[j] = wh[assign == j].mean(0)
    return centres[np.argsort(centres.prod(1))]


def box_sizes(cfg) -> np.ndarray:
    """Training boxes' (w, h) in input pixels after letterboxing, difficult ones left out."""
    classes = read_classes(cfg.data.classes_path)
    ensure_shapes(cfg, classes)
    records, _ = load_records(cfg.data, cfg.data.train_splits, classes)
    sizes = []
    for r in records:
        s = cfg.model.input_size / max(r.width, r.height)
        b = r.boxes[~r.difficult]
        sizes.append(np.stack([(b[:, 2] - b[:, 0]) * s, (b[:, 3] - b[:, 1]) * s], 1))
    wh = np.concatenate(sizes) if sizes else np.zeros((0, 2))
    return wh[(wh > 0).all(1)]


@one_line_errors(ConfigError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, default="shapes.yaml")
    parser.add_argument("-k", type=int, default=None, help="number of anchors (default: what the model needs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bpr-iou", type=float, default=0.5, help="IoU at which a box counts as recalled")
    parser.add_argument("--out", help="anchors file to write (Darknet format)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    k = args.k or NUM_ANCHORS[cfg.model.name]
    wh = box_sizes(cfg)
    anchors = kmeans_iou(wh, k, args.seed)
    current = np.array(read_anchors(cfg.model.anchors_path))
    result = {"boxes": len(wh), "k": k, "anchors": np.round(anchors).astype(int).tolist()}
    result["mean_iou"], result["bpr"] = anchor_fitness(wh, anchors, args.bpr_iou)
    result["current_mean_iou"], result["current_bpr"] = anchor_fitness(wh, current, args.bpr_iou)
    text = ",  ".join(f"{int(round(w))},{int(round(h))}" for w, h in anchors)
    print(f"{len(wh)} boxes, {k} anchors at input {cfg.model.input_size}: {text}")
    print(f"mean IoU {result['mean_iou']:.3f}, best possible recall at IoU {args.bpr_iou} {result['bpr']:.3f} "
          f"(current {cfg.model.anchors_path}: {result['current_mean_iou']:.3f}, {result['current_bpr']:.3f})")
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
