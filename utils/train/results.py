"""The run's ``results.csv``: a row per epoch, appended, and cut back on resume."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

CSV_FIELDS = ["epoch", "lr", "train_loc", "train_conf", "train_cls", "train_total", "val_loc", "val_conf", "val_cls",
              "map50", "map50_07", "map50_95", "num_pos", "collisions", "bad_steps", "seconds"]


def append_row(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if k in CSV_FIELDS})


def keep_rows(src: Path, dst: Path, last_epoch: int) -> None:
    """Write the rows of ``src`` up to ``last_epoch`` to ``dst`` (atomically; nothing when ``src`` is missing)."""
    if not src.is_file():
        return
    with open(src, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("epoch", "").isdigit() and int(r["epoch"]) <= last_epoch]
    tmp = dst.with_name(f".{dst.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, dst)
