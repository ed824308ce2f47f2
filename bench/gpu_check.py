"""The GPU path in a few minutes: train, resume, evaluate and predict on CUDA, then print JSON.

    python -m bench.gpu_check [--json out.json] [--out runs/gpu_check]
    python -m bench.gpu_check --smoke --device cpu      # the same steps, tiny, on the CPU (what the tests run)

On the synthetic shapes set (made in ``--out``, nothing downloaded):

1. yolov4 at 416, batch 8, 30 iterations (two epochs of 15), once in fp16 autocast with GradScaler
   (``train.amp=fp16``) and once in float32 (``train.amp=off``). Each run stops after its first epoch
   and is resumed from its ``last.pt`` (as ``train.py --resume`` does), then evaluated at the end.
   Checked: every loss finite, no skipped step, the mean loss of epoch 2 under that of epoch 1.
2. yolov4-tiny at 416, fp16, a few epochs, for a mAP that is not zero; then ``eval.py`` and
   ``predict.py`` on its best.pt with ``--precision fp16``.

Reported per run: images/s of the first epoch (no evaluation in it; the loader's start included),
peak CUDA memory (``torch.cuda.max_memory_allocated``), the losses per epoch, mAP50 and mAP50-95.
Exit status 1 when a check fails. CI has no GPU and runs only ``--smoke``; on CUDA run it by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eval as eval_cli  # noqa: E402
import predict as predict_cli  # noqa: E402
from bench.common import emit  # noqa: E402
from utils.config.load import load_config  # noqa: E402
from utils.train.fit import fit  # noqa: E402

FULL = {"size": 416, "train": 120, "val": 40, "batch": 8, "tiny_epochs": 6, "tiny_train": 400, "workers": 4}
SMOKE = {"size": 64, "train": 16, "val": 4, "batch": 8, "tiny_epochs": 2, "tiny_train": 16, "workers": 0}


def run_config(out: Path, name: str, model: str, amp: str, epochs: int, n_train: int, s: dict, device: str):
    return load_config("shapes.yaml", [
        f"data.root={out / 'data'}", f"train.save_dir={out / 'runs'}", f"train.name={name}", f"model.name={model}",
        f"model.anchors_path=model_data/{'yolo_anchors' if model == 'yolov4' else 'yolo_tiny_anchors'}.txt",
        f"model.input_size={s['size']}", f"shapes.width={s['size']}", f"shapes.height={s['size']}",
        f"shapes.num_train={n_train}", f"shapes.num_val={s['val']}", "shapes.num_test=0",
        f"train.epochs={epochs}", f"train.batch_size={s['batch']}", f"train.nominal_batch={s['batch']}",
        "train.freeze_epochs=0", "train.warmup_epochs=0.5", f"train.eval_period={epochs}", "train.save_period=0",
        f"train.amp={amp}", f"train.device={device}", "train.time_limit=0", f"data.workers={s['workers']}"])


def peak_memory_mb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def train_and_resume(out: Path, name: str, model: str, amp: str, s: dict, device: str, epochs: int = 2,
                     n_train: int | None = None) -> dict:
    """A run stopped after its first epoch, then resumed from last.pt to the end; its figures and checks."""
    n_train = n_train or s["train"]
    cfg = run_config(out, name, model, amp, epochs, n_train, s, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    first = fit(cfg, stop_after=1)
    run = Path(first["run_dir"])
    final = fit(cfg, resume=run / "last.pt")
    rows = list(csv.DictReader(open(run / "results.csv")))
    losses = [float(r["train_total"]) for r in rows]
    checks = {"finite": all(math.isfinite(v) for v in losses),
              "no_skipped_steps": all(int(r["bad_steps"]) == 0 for r in rows),
              "loss_falls": len(losses) >= 2 and losses[-1] < losses[0],
              "resumed_to_the_end": [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))}
    return {"run_dir": str(run), "amp": amp, "model": model, "iterations": epochs * math.ceil(n_train / s["batch"]),
            "images_per_s_epoch1": round(n_train / float(rows[0]["seconds"]), 1), "peak_memory_mb": peak_memory_mb(device),
            "train_loss_per_epoch": losses, "map50": final.get("map50"), "map50_95": final.get("map50_95"),
            "checks": checks}


def eval_and_predict(run: Path, out: Path, precision: str) -> dict:
    """eval.py and predict.py on the run's best.pt in ``precision``."""
    metrics = out / "eval.json"
    with contextlib.redirect_stdout(io.StringIO()):
        status_eval = eval_cli.main(["--weights", str(run / "best.pt"), "--precision", precision, "--json", str(metrics),
                                     "--save-dir", str(out / "eval")])
        images = out / "data" / "SHAPES" / "JPEGImages"
        t0 = time.perf_counter()
        status_predict = predict_cli.main(["--weights", str(run / "best.pt"), "--precision", precision, "--source",
                                           str(images), "--save-dir", str(out / "predict"), "--save-txt", "--no-save"])
        seconds = time.perf_counter() - t0
    m = json.loads(metrics.read_text()) if metrics.is_file() else {}
    labels = list((out / "predict").glob("exp*/labels/*.txt"))
    return {"eval_status": status_eval, "eval_map50": m.get("map50"), "eval_map50_95": m.get("map50_95"),
            "predict_status": status_predict, "predict_label_files": len(labels), "predict_seconds": round(seconds, 1),
            "checks": {"eval_ran": status_eval == 0 and bool(m), "predict_ran": status_predict == 0 and bool(labels)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N (cpu only with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the script's steps, not its figures")
    parser.add_argument("--out", default="runs/gpu_check", help="folder for the data and the runs")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("error: no CUDA device here; this check is for a GPU machine (or --smoke --device cpu)", file=sys.stderr)
        return 1
    if not cuda and not args.smoke:
        print("error: on the CPU only --smoke makes sense", file=sys.stderr)
        return 1
    s = SMOKE if args.smoke else FULL
    half = "fp16" if cuda else "bf16"  # the CPU has no float16 autocast worth testing; bf16 stands in for it there
    out = Path(args.out)
    t0 = time.time()
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, "smoke": args.smoke,
              "yolov4_amp": train_and_resume(out, "v4_amp", "yolov4-tiny" if args.smoke else "yolov4", half, s, args.device),
              "yolov4_fp32": train_and_resume(out, "v4_fp32", "yolov4-tiny" if args.smoke else "yolov4", "off", s,
                                              args.device)}
    tiny = train_and_resume(out, "tiny_amp", "yolov4-tiny", half, s, args.device, s["tiny_epochs"], s["tiny_train"])
    result["tiny_amp"] = tiny
    result["tiny_eval_predict"] = eval_and_predict(Path(tiny["run_dir"]), out, half)
    result["seconds"] = round(time.time() - t0, 1)
    failed = [f"{name}.{check}" for name, part in result.items() if isinstance(part, dict)
              for check, ok in part.get("checks", {}).items() if not ok]
    result["failed_checks"] = failed
    emit(result, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
