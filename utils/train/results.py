"""The run's record of its epochs: ``results.csv`` (a row per epoch, appended, cut back on resume) and
TensorBoard's event file beside it."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)
CSV_FIELDS = ["epoch", "lr", "train_loc", "train_conf", "train_cls", "train_total", "val_loc", "val_conf", "val_cls",
              "map50", "map50_07", "map50_95", "precision", "recall", "num_pos", "collisions", "bad_steps", "seconds",
              "data_seconds", "eval_seconds"]


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


class EpochLog:
    """Where an epoch's row goes (rank 0): ``run_dir/results.csv`` and, where tensorboard is installed, its event
    file. A context manager: the event file is closed on the way out."""

    def __init__(self, run_dir: Path) -> None:
        self.csv = run_dir / "results.csv"
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir))
        except ImportError:
            LOGGER.info("no TensorBoard event files: the tensorboard package is not installed (pip install tensorboard); "
                        "results.csv and results.png have every epoch's numbers")

    def row(self, epoch: int, row: dict[str, Any]) -> None:
        append_row(self.csv, row)
        if self.writer is not None:
            for k, v in row.items():
                if k != "epoch" and v is not None:
                    self.writer.add_scalar(k, v, epoch)

    def __enter__(self) -> EpochLog:
        return self

    def __exit__(self, *_exc) -> None:
        if self.writer is not None:
            self.writer.close()
