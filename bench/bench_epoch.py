"""Where a demo epoch's time goes, end to end: the training step, the wait for data, evaluation, checkpoints.

    python -m bench.bench_epoch [--epochs 3] [--images 800] [--json out.json] [-- override ...]

Trains the demo (configs/shapes.yaml, its recipe, ``train.amp: auto`` unless an override says otherwise)
for ``--epochs`` epochs with an evaluation after each, in a temporary folder, then reads its results.csv:
per epoch the training seconds (the step and the data wait), the data wait (``data_seconds``: the time
the loop waited for a batch), the evaluation's seconds, and the checkpoint writes, timed apart by
writing the run's last.pt again (``save_checkpoint``: a temporary file, fsync, rename) five times.
Medians over the epochs after the first (its one-off costs apart), and the first epoch on its own.
Prints JSON with each part's seconds and its share of an epoch that is evaluated and saved.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import demo_in, emit  # noqa: E402
from utils.checkpoint import save_checkpoint  # noqa: E402
from utils.runtime import cpu_has_native_bf16  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=800, help="training images (the demo's 800)")
    parser.add_argument("--json")
    parser.add_argument("overrides", nargs="*", help="more config overrides for train.py")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        overrides, cfg = demo_in(tmp, args.images, ["train.time_limit=0", f"train.epochs={args.epochs}",
                                                    "train.eval_period=1", "train.keep_last_state=true",
                                                    *args.overrides])
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", "shapes.yaml", *overrides], cwd=ROOT,
                              capture_output=True, text=True)
        wall = time.monotonic() - t0
        if proc.returncode:
            raise SystemExit(f"error: train.py failed with status {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        run = Path(tmp) / "runs" / "exp"
        rows = list(csv.DictReader(open(run / "results.csv")))
        last = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
        saves = []
        for _ in range(5):
            t = time.perf_counter()
            save_checkpoint(Path(tmp) / "again.pt", last)
            saves.append(time.perf_counter() - t)
        size_mb = (run / "last.pt").stat().st_size / 2**20

    def part(key: str, subset: list[dict]) -> float:
        return round(statistics.median(float(r[key]) for r in subset), 2)

    steady = rows[1:] or rows
    train_s = [float(r["seconds"]) - float(r["eval_seconds"]) for r in steady]
    epoch = {"train_s": round(statistics.median(train_s), 2), "data_wait_s": part("data_seconds", steady),
             "eval_s": part("eval_seconds", steady), "save_s": round(statistics.median(saves), 3)}
    epoch["step_s"] = round(epoch["train_s"] - epoch["data_wait_s"], 2)
    total = epoch["train_s"] + epoch["eval_s"] + epoch["save_s"]
    first = {"train_s": round(float(rows[0]["seconds"]) - float(rows[0]["eval_seconds"]), 2),
             "data_wait_s": float(rows[0]["data_seconds"]), "eval_s": float(rows[0]["eval_seconds"])}
    return emit({"bench": "epoch", "model": cfg.model.name, "input_size": cfg.model.input_size, "amp": cfg.train.amp,
                 "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(), "images": args.images,
                 "epochs": len(rows), "wall_s": round(wall, 1), "epoch": epoch,
                 "share": {k: round(epoch[k] / total, 3) for k in ("step_s", "data_wait_s", "eval_s", "save_s")},
                 "images_per_s": round(args.images / epoch["train_s"], 1), "first_epoch": first,
                 "checkpoint_mb": round(size_mb, 1)}, args.json)


if __name__ == "__main__":
    main()
