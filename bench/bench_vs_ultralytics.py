"""This toolkit's demo beside Ultralytics YOLOv8n: the same set, machine, threads and time budget, one after the other.

    python -m bench.bench_vs_ultralytics [--minutes 15] [--threads 2] [--json out.json]

Optional: it runs only where the ``ultralytics`` package is installed in this environment. It is not a
dependency of the project and never runs in CI. What it does, in order:

1. The demo's set (``shapes.yaml``: 800 training and 200 validation images at 160 px, six long-tailed
   classes) is made if it is missing, and written in YOLO format under the bench's folder
   (``runs/vs_ultralytics/expN/yolo``: images linked, ``labels/*.txt``, ``data.yaml``). Difficult
   objects are left out of the labels (YOLO labels have no such flag); ``eval.py`` ignores them.
2. This toolkit: ``python train.py --config shapes.yaml train.time_limit=<minutes>``, everything
   else as shapes.yaml and the machine pick it (``train.amp: auto``, ``train.channels_last: auto``).
   ``--fp32`` adds ``train.amp=off`` (a CPU without bfloat16 instructions trains so; YOLOv8n then runs
   without AMP too).
3. Ultralytics, with its own defaults otherwise: ``YOLO("yolov8n.yaml").train(data=..., imgsz=<each of
   --yolo-imgsz: 160 and the size the demo trains at on this machine by default (shapes.yaml's
   ``train.float32_overrides`` make it 192 px in float32 on a CPU, 256 px elsewhere)>, batch=16,
   time=<minutes / 60>, device="cpu", pretrained=False, amp=False, plots=False, seed=0)``, offline
   (``YOLO_OFFLINE=true``), its settings kept under the bench's folder; the ratio is against its best size by
   mAP50-95 (each size's run is in ``by_imgsz``).
   On a CUDA machine both train on the GPU with AMP (``device=0, amp=True``; ours: ``train.device=cuda``), unless
   ``--fp32``.
4. Both on the same validation split, by this toolkit's ``eval.py``: ours from its best.pt in float32,
   YOLOv8n's from its best.pt's predictions at its validation settings (conf 0.001, NMS IoU 0.7, 300 per
   image) written as COCO results and scored by ``eval.py --detections``. Ultralytics' own validation of
   its best.pt is reported too.

Each side runs in its own process with ``OMP_NUM_THREADS`` and torch's thread count set to ``--threads``
(Ultralytics' own default would be one thread fewer than the cores). Prints JSON: per side the command,
wall seconds, epochs, images/s (epochs x training images / the training command's wall seconds), mAP50 and
mAP50-95 by eval.py; and this toolkit's over YOLOv8n's.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit  # noqa: E402
from utils.config.files import REPO_ROOT, read_classes  # noqa: E402
from utils.config.load import load_config  # noqa: E402
from utils.data.splits import load_records  # noqa: E402
from utils.data.synthetic import ensure_shapes  # noqa: E402
from utils.data.yolo import write_yolo_dataset  # noqa: E402
from utils.runtime import next_run_dir  # noqa: E402
from utils.train.setup import float32_recipe  # noqa: E402


def child_env(threads: int, workdir: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "YOLO_OFFLINE": "true",
            "YOLO_AUTOINSTALL": "false", "YOLO_CONFIG_DIR": str(workdir / "ultralytics_settings")}


def run(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, str]:
    """Run ``cmd`` from the repository root with its output in ``log``; (wall seconds, its stdout)."""
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=fh, text=True)
        fh.write(proc.stdout)
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(cmd[:3])} ... failed with status {proc.returncode}; see {log}")
    return time.time() - t0, proc.stdout


def evaluate(args: list[str], out: Path, env: dict[str, str], log: Path) -> dict:
    run([sys.executable, "eval.py", *args, "--json", str(out), "--save-dir", str(out.parent / "eval")], env, log)
    m = json.loads(out.read_text())
    return {"map50": round(m["map50"], 4), "map50_95": round(m["map50_95"], 4)}


def ours(minutes: float, threads: int, device: str, fp32: bool, workdir: Path, n_train: int) -> dict:
    env = child_env(threads, workdir)
    cmd = [sys.executable, "train.py", "--config", "shapes.yaml", f"train.time_limit={minutes}",
           f"train.save_dir={workdir}", "train.name=ours", f"train.device={device}", *(["train.amp=off"] if fp32 else [])]
    seconds, _ = run(cmd, env, workdir / "ours_train.log")
    run_dir = workdir / "ours"
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    result = {"command": " ".join(["python", *cmd[1:]]), "wall_seconds": round(seconds, 1), "epochs": len(rows),
              "images_per_s": round(len(rows) * n_train / seconds, 1)}
    result.update(evaluate(["--weights", str(run_dir / "best.pt"), "--precision", "fp32"], workdir / "ours_eval.json",
                           env, workdir / "ours_eval.log"))
    return result


def ultralytics(minutes: float, threads: int, device: str, fp32: bool, workdir: Path, data_yaml: Path, size: int,
                val_images: list[str], n_train: int) -> dict:
    env = child_env(threads, workdir)
    name = f"ultralytics_{size}"
    detections = workdir / f"{name}_detections.json"
    amp = device == "cuda" and not fp32
    spec = {"data": str(data_yaml), "size": size, "minutes": minutes, "device": "0" if device == "cuda" else "cpu",
            "amp": amp, "name": name, "threads": threads, "project": str(workdir), "val_images": val_images,
            "detections": str(detections)}
    seconds, out = run([sys.executable, "-m", "bench.ultralytics_side", json.dumps(spec)], env, workdir / f"{name}.log")
    child = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    epochs = len(list(csv.DictReader(open(Path(child["run_dir"]) / "results.csv"))))
    result = {"command": f'YOLO("yolov8n.yaml").train(data={data_yaml.name}, imgsz={size}, batch=16, '
                         f'time={minutes / 60:.4g}, device={spec["device"]!r}, pretrained=False, amp={amp}, '
                         "plots=False, seed=0)",
              "wall_seconds": round(seconds, 1), "train_seconds": round(child["train_seconds"], 1), "epochs": epochs,
              "images_per_s": round(epochs * n_train / child["train_seconds"], 1),
              "ultralytics_val": {"map50": round(child["own_map50"], 4), "map50_95": round(child["own_map50_95"], 4)}}
    result.update(evaluate(["--detections", str(detections), "--config", "shapes.yaml"], workdir / f"{name}_eval.json",
                           env, workdir / f"{name}_eval.log"))
    return result


def best_of(runs: dict[int, dict]) -> dict:
    """YOLOv8n's run of highest mAP50-95 (the first size on a tie), with every size's run under ``by_imgsz``."""
    best = max(runs, key=lambda size: runs[size]["map50_95"])
    return {"best_imgsz": best, **runs[best], "by_imgsz": {str(k): v for k, v in runs.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="each side's training budget")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of each side")
    parser.add_argument("--fp32", action="store_true", help="both sides in float32: this toolkit with train.amp=off, "
                        "YOLOv8n without AMP (on the CPU it has none anyway)")
    parser.add_argument("--only", choices=("ours", "ultralytics"), help="run one side only")
    parser.add_argument("--yolo-imgsz", type=int, nargs="+", metavar="PX",
                        help="YOLOv8n's input sizes, one run each; the ratio is against the best of them by mAP50-95 "
                        "(default: 160, its better size on a 2-core CPU, and the size the demo trains at here)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.only != "ours" and importlib.util.find_spec("ultralytics") is None:
        raise SystemExit("error: this bench needs the ultralytics package in this environment (pip install ultralytics); "
                         "it is not a dependency of the project")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    overrides = ["train.amp=off"] if args.fp32 else []
    cfg = float32_recipe(load_config("shapes.yaml", overrides), overrides)  # the size train.py will train at
    classes = read_classes(cfg.data.classes_path)
    ensure_shapes(cfg, classes)
    train_records, _ = load_records(cfg.data, cfg.data.train_splits, classes)
    val_records, _ = load_records(cfg.data, cfg.data.val_splits, classes)
    workdir = next_run_dir(REPO_ROOT / "runs" / "vs_ultralytics")
    result: dict = {"bench": "vs_ultralytics", "minutes": args.minutes, "threads": args.threads, "device": device,
                    "train_images": len(train_records), "val_images": len(val_records),
                    "input_size": cfg.model.input_size, "workdir": str(workdir)}
    if args.only != "ultralytics":
        result["ours"] = ours(args.minutes, args.threads, device, args.fp32, workdir, len(train_records))
    if args.only != "ours":
        data_yaml = write_yolo_dataset({"train": train_records, "val": val_records}, classes, workdir / "yolo")
        sizes = list(dict.fromkeys(args.yolo_imgsz or [160, cfg.model.input_size]))
        runs = {size: ultralytics(args.minutes, args.threads, device, args.fp32, workdir, data_yaml, size,
                                  [r.path for r in val_records], len(train_records)) for size in sizes}
        result["ultralytics"] = best_of(runs)
    if args.only is None:
        o, u = result["ours"], result["ultralytics"]
        result["ratio"] = {k: round(o[k] / u[k], 3) if u[k] else None for k in ("map50", "map50_95", "images_per_s")}
    return emit(result, args.json)


if __name__ == "__main__":
    main()
