"""The objectness study's report, from a finished (or partial) run of objectness_sweep.sh.

    python bench/ablation/objectness_report.py [--sweep bench/ablation/objectness_e120] [--out bench/ablation]

Writes into ``--out`` (tracked files; the run folders are not):

- ``objectness_e120.md`` / ``.csv`` / ``.png``: ablate.py's tables and bars (``--report``), copied;
- ``bce_curve.png``: BCE's mAP50 against the epoch for each seed, the last 20% of the epochs shaded,
  and on stdout the spread of each seed's mAP50 over that stretch (the plateau criterion: within 0.01);
- ``objectness_hist.png`` / ``.json``: tools/objectness_hist.py on the best.pt of ``bce_seed0`` and
  ``focal_doc_seed0`` (BCE against classic focal with the documents' settings).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SWEEP_SCRIPT = Path(__file__).resolve().parent / "objectness_sweep.sh"


def bce_curves(sweep: Path, out: Path) -> dict[str, float]:
    """Plot BCE's mAP50 per evaluated epoch for every seed; return each seed's spread over the last 20% of epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    spreads = {}
    last = 0
    for run in sorted(sweep.glob("bce_seed*")):
        with open(run / "results.csv", newline="") as fh:
            rows = [(int(r["epoch"]), float(r["map50"])) for r in csv.DictReader(fh) if r.get("map50")]
        if not rows:
            continue
        epochs, maps = zip(*rows, strict=True)
        last = max(last, epochs[-1])
        tail = [m for e, m in rows if e > 0.8 * epochs[-1]]
        spreads[run.name] = round(max(tail) - min(tail), 4)
        ax.plot(epochs, maps, label=f"{run.name} (last 20%: spread {spreads[run.name]:.3f})", lw=1.2)
    if last:
        ax.axvspan(0.8 * last, last, color="0.9", zorder=0)
    ax.set(xlabel="epoch", ylabel="mAP50 (VOC all-point, val)", title="BCE objectness: mAP50 by epoch, each seed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return spreads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", default="bench/ablation/objectness_e120", help="the sweep's folder (ablate --out)")
    parser.add_argument("--out", default="bench/ablation", help="where the tracked report files go")
    args = parser.parse_args(argv)
    sweep, out = (ROOT / args.sweep).resolve(), (ROOT / args.out).resolve()
    # ablate.py --report with the sweep's own arguments, pointed at this folder
    subprocess.run(["bash", str(SWEEP_SCRIPT), "--report", "--out", str(sweep)], check=True, cwd=ROOT)
    for suffix in ("md", "csv", "png"):
        shutil.copyfile(sweep / f"ablation.{suffix}", out / f"objectness_e120.{suffix}")
    for name, spread in bce_curves(sweep, out / "bce_curve.png").items():
        print(f"{name}: mAP50 spread over the last 20% of epochs {spread:.4f}")
    weights = [sweep / name / "best.pt" for name in ("bce_seed0", "focal_doc_seed0")]
    if all(w.is_file() for w in weights):
        subprocess.run([sys.executable, "tools/objectness_hist.py", "--weights", *map(str, weights),
                        "--labels", "BCE", "classic focal", "--out", str(out / "objectness_hist.png")], check=True, cwd=ROOT)
    print(f"report in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
