"""The sweep's reports: ablation.csv (a row per run), ablation.md (the table) and ablation.png (bars)."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

CSV_FIELDS = ["setting", "seed", "map50", "map50_07", "map50_95", "rare_ap50", "epochs", "seconds", "run_dir"]


def write_reports(out: Path, table: list[dict], rows: list[dict], title: str) -> None:
    with open(out / "ablation.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    best = max(table, key=lambda e: e["map50"][0])["setting"] if table else None

    def pm(v) -> str:
        return "-" if v is None else f"{v[0]:.4f} ± {v[1]:.4f}"

    def signed(v) -> str:  # mean difference and its 95% interval
        return "-" if v is None else f"{v[0]:+.4f} [{v[0] - v[2]:+.4f}, {v[0] + v[2]:+.4f}]"

    partners = " / ".join(sorted({e["versus"] for e in table if "versus" in e})) or "focal off"
    lines = [f"# {title}", "", f"Mean ± standard deviation over seeds. Δ is the difference from {partners} at the "
             "same seed (and the same other settings): its mean and, in brackets, its 95% t interval. Rare-class "
             "AP50: the AP50 of the class with the fewest training objects.", "",
             "| setting | runs | mAP50 | mAP50-95 | rare-class AP50 | Δ mAP50 | Δ mAP50-95 | Δ rare-class AP50 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in table:
        name = f"**{e['setting']}**" if e["setting"] == best else e["setting"]
        lines.append(f"| {name} | {e['runs']} | {pm(e['map50'])} | {pm(e['map50_95'])} | {pm(e['rare_ap50'])} | "
                     f"{signed(e.get('delta_map50'))} | {signed(e.get('delta_map50_95'))} | "
                     f"{signed(e.get('delta_rare_ap50'))} |")
    if best:
        lines += ["", f"Best by mean mAP50: **{best}**."]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    if table:
        plot(out / "ablation.png", table, title)


def wrap_title(title: str, width_in: float, fontsize: float = 8) -> str:
    """The title broken into lines that fit the figure's width (a sweep's overrides can run to 300 characters)."""
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)))  # a character is about 0.6 em wide
    return textwrap.fill(title, chars, break_on_hyphens=False)


def plot(path: Path, table: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(table))
    width = max(5.0, 1.3 * len(table) + 2)
    fig, ax = plt.subplots(figsize=(width, 4))
    for i, (m, name) in enumerate((("map50", "mAP50"), ("map50_95", "mAP50-95"))):
        ax.bar(x + (i - 0.5) * 0.38, [e[m][0] for e in table], 0.38, yerr=[e[m][1] for e in table], capsize=4, label=name)
    ax.set_xticks(x, [e["setting"].replace(" ", "\n") for e in table], fontsize=8)
    ax.set_ylabel("mean over seeds (error bars: std)")
    ax.set_title(wrap_title(title, width), fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
