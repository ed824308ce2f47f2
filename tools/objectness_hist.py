"""Histograms of the objectness scores a model gives its positives and its negatives, for several models.

    python tools/objectness_hist.py --weights runs/a/bce_seed0/best.pt runs/a/focal_seed0/best.pt \\
        --labels BCE "classic focal" --out objectness.png [--split SHAPES/val] [section.key=value ...]

For each checkpoint, on the validation images (letterboxed at the model's input size): the cells the
training assignment makes positive (``obj_mask``) and the negatives it keeps (``noobj_mask``: not
ignored), and ``sigmoid(objectness)`` of each. The figure has one panel each, the scores' share per
bin on a log scale, one line per model: focal objectness is known to push positives' scores down
from 1 (its loss vanishes as p_t grows), which this shows. A JSON summary goes beside the figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nets.assign import TargetAssigner  # noqa: E402
from nets.box_coding import to_per_anchor  # noqa: E402
from utils.data.dataset import LetterboxDataset  # noqa: E402
from utils.data.records import DataError  # noqa: E402
from utils.data.splits import load_records  # noqa: E402
from utils.infer.backend import load_model  # noqa: E402

BINS = np.linspace(0.0, 1.0, 41)


@torch.inference_mode()
def objectness_scores(weights: str | Path, overrides: list[str], splits: list[str] | None = None,
                      batch: int = 16) -> dict[str, np.ndarray]:
    """``{"positive": [P], "negative": [N]}``: the objectness probabilities of the assignment's positives and of
    its kept negatives over the validation images of the checkpoint's config (or ``splits``)."""
    model, cfg, classes, anchors = load_model(weights, overrides=overrides)
    records, _ = load_records(cfg.data, splits or cfg.data.val_splits, classes)
    assigner = TargetAssigner.from_config(cfg, len(classes), anchors, model.strides, model.anchor_masks)
    ds = LetterboxDataset(records, cfg.model.input_size)
    pos, neg = [], []
    for start in range(0, len(ds), batch):
        items = [ds[i] for i in range(start, min(start + batch, len(ds)))]
        items = [it for it in items if it[0] is not None]  # images that fail to decode are left out
        if not items:
            continue
        images = torch.stack([it[0] for it in items]).float().div_(255)
        outputs = model(images)
        assignment = assigner(outputs, ds.batch_targets([it[1] for it in items]))
        for raw, tg in zip(outputs, assignment.levels, strict=True):
            p = to_per_anchor(raw.float(), assigner.num_anchors)[..., 4].sigmoid()  # [B, A, H, W]
            pos.append(p[tg.obj_mask].numpy())
            neg.append(p[tg.noobj_mask].numpy())
    return {"positive": np.concatenate(pos), "negative": np.concatenate(neg)}


def summary(scores: dict[str, np.ndarray]) -> dict[str, float]:
    p, n = scores["positive"], scores["negative"]
    return {"positives": int(len(p)), "negatives": int(len(n)), "positive_median": float(np.median(p)),
            "positive_share_above_0.5": float((p > 0.5).mean()), "negative_share_above_0.1": float((n > 0.1).mean()),
            "negative_share_above_0.5": float((n > 0.5).mean())}


def plot(path: Path, all_scores: dict[str, dict[str, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, kind in zip(axes, ("positive", "negative"), strict=True):
        for name, scores in all_scores.items():
            counts, _ = np.histogram(scores[kind], BINS)
            ax.stairs(np.maximum(counts / max(len(scores[kind]), 1), 1e-7), BINS, label=name, linewidth=1.6)
        ax.set_yscale("log")
        ax.set_xlabel("objectness score sigmoid(logit)")
        ax.set_ylabel("share of cells per bin")
        which = "positives (cells that own a ground truth)" if kind == "positive" else "kept negatives (not ignored)"
        ax.set_title(which, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", required=True, help=".pt checkpoints written by train.py")
    parser.add_argument("--labels", nargs="+", help="a name per checkpoint (default: its folder's name)")
    parser.add_argument("--split", nargs="+", help="splits to score (default: each config's data.val_splits)")
    parser.add_argument("--out", default="objectness.png", help="the figure; the summary goes beside it as .json")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. data.root=... where it moved")
    args = parser.parse_args(argv)
    labels = args.labels or [Path(w).parent.name for w in args.weights]
    if len(labels) != len(args.weights):
        raise SystemExit(f"error: {len(args.weights)} checkpoints but {len(labels)} labels")
    try:
        scores = {name: objectness_scores(w, args.overrides, args.split) for name, w in zip(labels, args.weights, strict=True)}
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(out, scores)
    result = {name: summary(s) for name, s in scores.items()}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
