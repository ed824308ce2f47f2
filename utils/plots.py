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
