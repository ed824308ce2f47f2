"""Plots written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_pr_curves(curves: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], class_names: Sequence[str],
                   ap: Sequence[float], path: str | Path) -> Path:
    """One precision-recall curve per class (the envelope, as AP integrates it), AP in the legend."""
    fig, ax = plt.subplots(figsize=(8, 6), dpi=120)
    for (recall, precision, _), name, a in zip(curves, class_names, ap, strict=True):
        if len(recall) == 0 or np.isnan(a):
            continue
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        ax.plot(np.concatenate([[0], recall]), np.concatenate([[envelope[0]], envelope]), lw=1.2,
                label=f"{name} {a:.3f}")
    valid = [a for a in ap if not np.isnan(a)]
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"PR curves, mAP50 {np.mean(valid) if valid else float('nan'):.3f}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_results(csv_path: str | Path, path: str | Path) -> Path:
    """Loss terms (train and val), learning rate and mAP per epoch from a run's results.csv."""
    import csv

    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))

    def col(name: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [(float(r["epoch"]), float(r[name])) for r in rows if r.get(name) not in (None, "")]
        return (np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) if pts else (np.zeros(0), np.zeros(0))

    panels = [("loc", ["train_loc", "val_loc"]), ("conf", ["train_conf", "val_conf"]), ("cls", ["train_cls", "val_cls"]),
              ("total train loss", ["train_total"]), ("learning rate", ["lr"]), ("mAP", ["map50", "map50_95"])]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), dpi=100)
    for ax, (title, names) in zip(axes.ravel(), panels, strict=True):
        for name in names:
            x, y = col(name)
            if len(x):
                ax.plot(x, y, marker="." if len(x) < 30 else None, label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | Path, score_thr: float,
                          iou_thr: float) -> Path:
    """The confusion matrix normalized per true class (each column sums to 1), background last."""
    names = [*class_names, "background"]
    cols = matrix.sum(0, keepdims=True)
    norm = np.divide(matrix, cols, out=np.zeros(matrix.shape), where=cols > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * n + 3), max(5, 0.5 * n + 2.5)), dpi=120)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=90, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set(xlabel="true", ylabel="predicted",
           title=f"confusion matrix (score >= {score_thr:g}, IoU >= {iou_thr:g}), normalized per true class")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_score_curves(grid: np.ndarray, values: np.ndarray, valid: np.ndarray, class_names: Sequence[str],
                      ylabel: str, path: str | Path) -> Path:
    """A metric (precision, recall or F1) per class against the score threshold ``grid``, and its mean over the
    classes with ground truth in bold, its best marked for F1."""
    fig, ax = plt.subplots(figsize=(8, 6), dpi=120)
    for v, name, ok in zip(values, class_names, valid, strict=True):
        if ok:
            ax.plot(grid, v, lw=0.8, alpha=0.7, label=name if len(class_names) <= 20 else None)
    mean = values[valid].mean(0) if valid.any() else np.zeros_like(grid)
    k = int(mean.argmax())
    label = f"all classes {mean[k]:.2f} at {grid[k]:.3f}" if ylabel == "F1" else "all classes"
    ax.plot(grid, mean, lw=2.5, color="C0" if ylabel != "F1" else "k", label=label)
    ax.set(xlabel="score threshold", ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02), title=f"{ylabel} by score threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=2)
    return _save(fig, path)


def plot_evaluation(result: dict, class_names: Sequence[str], out_dir: str | Path, score_thr: float,
                    iou_thr: float) -> list[Path]:
    """Everything an evaluation draws into ``out_dir``: confusion_matrix.png, PR_curve.png, P_curve.png,
    R_curve.png and F1_curve.png (``result``: utils.train.engine.evaluate's)."""
    from utils.metrics.voc import F1_GRID, pr_on_grid

    out_dir = Path(out_dir)
    voc = result["voc"]
    p, r, f1 = pr_on_grid(voc["curves"], voc["npos"])
    valid = voc["npos"] > 0
    paths = [plot_confusion_matrix(result["confusion"], class_names, out_dir / "confusion_matrix.png", score_thr, iou_thr),
             plot_pr_curves(voc["curves"], class_names, voc["ap"], out_dir / "PR_curve.png")]
    for values, name, file in ((p, "precision", "P_curve.png"), (r, "recall", "R_curve.png"), (f1, "F1", "F1_curve.png")):
        paths.append(plot_score_curves(F1_GRID, values, valid, class_names, name, out_dir / file))
    return paths


def plot_labels(records: Sequence, class_names: Sequence[str], path: str | Path) -> Path:
    """labels.png: objects per class, and where the boxes are and how big, in fractions of their image."""
    boxes = [r.boxes / [r.width, r.height, r.width, r.height] for r in records if len(r.boxes)]
    b = np.concatenate(boxes) if boxes else np.zeros((0, 4))
    labels = np.concatenate([r.labels for r in records]) if records else np.zeros(0, int)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), dpi=100)
    counts = np.bincount(labels, minlength=len(class_names))
    axes[0].bar(range(len(class_names)), counts, color=[f"C{i % 10}" for i in range(len(class_names))])
    axes[0].set_xticks(range(len(class_names)), class_names, rotation=90 if len(class_names) > 8 else 0, fontsize=8)
    axes[0].set(ylabel="objects", title=f"objects per class ({len(labels)} in {len(records)} images)")
    axes[1].hist2d((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, bins=40, range=[[0, 1], [0, 1]], cmap="Blues")
    axes[1].set(xlabel="box centre x / image width", ylabel="box centre y / image height", title="where the boxes are")
    axes[1].invert_yaxis()
    axes[2].hist2d(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1], bins=40, range=[[0, 1], [0, 1]], cmap="Blues")
    axes[2].set(xlabel="box width / image width", ylabel="box height / image height", title="how big the boxes are")
    return _save(fig, path)


def save_batch_pictures(records: Sequence, dets: Sequence[np.ndarray] | None, class_names: Sequence[str],
                        out_dir: str | Path, conf: float = 0.25, n: int = 16) -> list[Path]:
    """val_batch0_labels.jpg (the first ``n`` images with their ground truth) and, with ``dets`` (per image
    ``[K, 6]`` in its pixels), val_batch0_pred.jpg (the detections scoring at least ``conf``). Images that
    cannot be decoded are left out."""
    import cv2

    from utils.data.images import ImageReadError, read_image
    from utils.infer.draw import draw_detections, image_grid

    images, truth, pred = [], [], []
    for i, rec in enumerate(records[:n]):
        try:
            img = read_image(rec.path)
        except ImageReadError:  # counted by the evaluation already; the picture goes without it
            continue
        images.append(img)
        gt = np.concatenate([rec.boxes, np.ones((len(rec.boxes), 1)), rec.labels[:, None]], 1)
        truth.append(draw_detections(img, gt, class_names, scores=False))
        if dets is not None:
            pred.append(draw_detections(img, dets[i][dets[i][:, 4] >= conf], class_names))
    out_dir = Path(out_dir)
    cell = 320 if max((max(im.shape[:2]) for im in images), default=0) >= 320 else 160
    paths = [out_dir / "val_batch0_labels.jpg"]
    cv2.imwrite(str(paths[0]), image_grid(truth, cell))
    if pred:
        paths.append(out_dir / "val_batch0_pred.jpg")
        cv2.imwrite(str(paths[1]), image_grid(pred, cell))
    return paths


def save_train_batch(dataset, class_names: Sequence[str], path: str | Path, n: int = 16) -> Path:
    """train_batch0.jpg: the first ``n`` samples as training sees them (augmented), with their boxes."""
    import cv2

    from utils.infer.draw import draw_detections, image_grid

    tiles = []
    for i in range(min(n, len(dataset))):
        img, targets = dataset[i]
        bgr = np.ascontiguousarray(img.numpy().transpose(1, 2, 0)[:, :, ::-1])
        t = targets.numpy()
        boxes = np.concatenate([t[:, 1:5], np.ones((len(t), 1)), t[:, :1]], 1)
        tiles.append(draw_detections(bgr, boxes, class_names, scores=False))
    cv2.imwrite(str(path), image_grid(tiles, tiles[0].shape[0] if tiles else 160))
    return Path(path)
