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
