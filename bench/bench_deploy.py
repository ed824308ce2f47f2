"""Deployment speed beside accuracy: this toolkit's demo model and Ultralytics YOLOv8n, exported to ONNX and run
by ONNX Runtime and OpenVINO at the same input sizes and threads.

    python -m bench.bench_deploy --ours runs/vs_ultralytics/exp1/ours/best.pt \\
        --yolo runs/vs_ultralytics/exp1/ultralytics_160/weights/best.pt [--sizes 160 256 320] [--threads 2] \\
        [--runs 50] [--profile] [--plot deploy.png] [--json out.json]

Optional: the YOLOv8n side needs the ``ultralytics`` package (never in CI); the two checkpoints are the ones
``bench.bench_vs_ultralytics`` trains, on the demo's set. For each model and size, in order:

1. Both are exported to ONNX as each project exports them, raw outputs (no NMS, whose cost depends on how many
   boxes a picture has), float32, batch 1, simplified with onnxslim: ours by ``export.py --simplify``, YOLOv8n
   by ``YOLO(best.pt).export(format="onnx", imgsz=size, simplify=True)``. YOLOv8n's graph includes its box
   decoding (DFL); ours gives the three maps, whose decoding is a handful of element-wise operations.
2. Each graph runs in ONNX Runtime (CPU provider, ``intra_op_num_threads=--threads``) and in OpenVINO (the same
   ONNX file, CPU, ``INFERENCE_NUM_THREADS=--threads``, ``PERFORMANCE_HINT=LATENCY`` and
   ``INFERENCE_PRECISION_HINT=f32``, so that a CPU with bfloat16 instructions runs float32 too; ``--bf16``
   leaves OpenVINO its own choice there). Latency: the median of ``--runs`` batch-1 calls on one input,
   every model of a size and runtime timed in alternation, so that a slow spell of the machine falls on all.
3. mAP50-95 at each size on the demo's validation split, scored by this toolkit's eval.py code: ours from its
   checkpoint in float32 (PyTorch; the exported graphs give the same detections, tests/test_export.py),
   YOLOv8n from its predictions at its validation settings (conf 0.001, NMS IoU 0.7, 300 per image).

``--profile`` adds, per model at the first size, ONNX Runtime's time per operator type (its profiler, over
``--runs`` calls): where the time goes. ``--plot`` draws mAP50-95 against milliseconds per image, one line per
model and runtime, each point labelled with its size. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_name, emit, median_ms_interleaved  # noqa: E402
from utils.infer.evaluation import evaluate_run  # noqa: E402
from utils.infer.export import export_model  # noqa: E402

RUNTIMES = ("onnxruntime", "openvino")


def export_ours(weights: Path, size: int, folder: Path) -> Path:
    path, _ = export_model(weights, "onnx", folder / f"ours_{size}.onnx", img_size=size, simplify=True)
    return path


def export_yolo(weights: Path, size: int, folder: Path) -> Path:
    """Ultralytics writes the graph beside the checkpoint: a copy of it in ``folder`` keeps the user's run as it was."""
    from ultralytics import YOLO

    copy = folder / f"yolov8n_{size}.pt"
    shutil.copyfile(weights, copy)
    return Path(YOLO(str(copy)).export(format="onnx", imgsz=size, simplify=True, dynamic=False, opset=17,
                                       device="cpu", verbose=False))


def session(path: Path, runtime: str, threads: int, bf16: bool):
    """A batch-1 callable running the graph at ``path`` on ``runtime``."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).random([1, *inp.shape[1:]], dtype=np.float32)
        return lambda: sess.run(None, {inp.name: x})
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if not bf16:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random(list(compiled.inputs[0].shape), dtype=np.float32)
    return lambda: request.infer({0: x})


def map_ours(weights: Path, size: int, folder: Path) -> float:
    summary = evaluate_run(weights, overrides=[f"model.input_size={size}"], device="cpu", precision="fp32",
                           save_dir=folder / "eval").summary
    return round(summary["map50_95"], 4)


def map_yolo(weights: Path, size: int, images: list[str], folder: Path) -> float:
    from ultralytics import YOLO

    from bench.ultralytics_side import coco_detections

    path = folder / f"yolov8n_{size}_detections.json"
    path.write_text(json.dumps(coco_detections(YOLO(str(weights)), images, size, "cpu")))
    return round(evaluate_run(detections=path, config="shapes.yaml", save_dir=folder / "eval").summary["map50_95"], 4)


def operator_times(path: Path, threads: int, runs: int, folder: Path) -> dict[str, float]:
    """Milliseconds per call by operator type (ONNX Runtime's profiler), largest first."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling, opts.profile_file_prefix = True, str(folder / path.stem)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).random([1, *inp.shape[1:]], dtype=np.float32)
    for _ in range(runs):
        sess.run(None, {inp.name: x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    total: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return {op: round(ms, 3) for op, ms in sorted(total.items(), key=lambda kv: -kv[1])}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, colour in (("ours", "tab:blue"), ("yolov8n", "tab:orange")):
        for runtime, style in zip(result["runtimes"], ("-o", "--s"), strict=False):
            rows = result["models"][model]
            ms = [rows[s]["ms"][runtime] for s in rows]
            ax.plot(ms, [rows[s]["map50_95"] for s in rows], style, color=colour,
                    label=f"{result['names'][model]}, {runtime}")
            for s, x in zip(rows, ms, strict=True):
                ax.annotate(s, (x, rows[s]["map50_95"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"milliseconds per image (batch 1, {result['threads']} threads, float32)")
    ax.set_ylabel("mAP50-95, demo val split")
    ax.set_title(f"Deployment: accuracy against latency ({result['cpu']})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", type=Path, required=True, help="this toolkit's best.pt")
    parser.add_argument("--yolo", type=Path, required=True, help="YOLOv8n's best.pt (bench.bench_vs_ultralytics)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 256, 320])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--runs", type=int, default=50, help="timed calls per model, size and runtime")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--bf16", action="store_true", help="let OpenVINO pick bfloat16 where the CPU has it")
    parser.add_argument("--profile", action="store_true", help="ONNX Runtime's time per operator type, first size")
    parser.add_argument("--plot", type=Path, metavar="PNG")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    for path in (args.ours, args.yolo):
        if not path.is_file():
            raise SystemExit(f"error: {path} does not exist")
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        raise SystemExit("error: this bench needs the ultralytics package (pip install ultralytics); it is not a "
                         "dependency of the project") from None
    import torch

    from utils.runtime import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    result: dict = {"bench": "deploy", "cpu": cpu_name(), "cpu_bf16": cpu_has_native_bf16(), "threads": args.threads,
                    "runs": args.runs, "runtimes": args.runtimes, "precision": "bf16 allowed" if args.bf16 else "fp32",
                    "names": {"ours": "this toolkit (demo model)", "yolov8n": "YOLOv8n"},
                    "weights": {"ours": str(args.ours), "yolov8n": str(args.yolo)},
                    "models": {"ours": {}, "yolov8n": {}}}
    from utils.config.files import read_classes
    from utils.config.load import load_config
    from utils.data.splits import load_records

    cfg = load_config("shapes.yaml")
    images = [r.path for r in load_records(cfg.data, cfg.data.val_splits, read_classes(cfg.data.classes_path))[0]]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        graphs = {}
        for size in args.sizes:
            graphs["ours", size] = export_ours(args.ours, size, folder)
            graphs["yolov8n", size] = export_yolo(args.yolo, size, folder)
            for model in ("ours", "yolov8n"):
                result["models"][model][str(size)] = {"onnx_bytes": graphs[model, size].stat().st_size, "ms": {}}
        for size in args.sizes:
            for runtime in args.runtimes:
                calls = {m: session(graphs[m, size], runtime, args.threads, args.bf16) for m in ("ours", "yolov8n")}
                ms = median_ms_interleaved(calls, dict.fromkeys(calls, args.runs), warmup=5)
                for m, v in ms.items():
                    result["models"][m][str(size)]["ms"][runtime] = round(v, 2)
        for size in args.sizes:
            result["models"]["ours"][str(size)]["map50_95"] = map_ours(args.ours, size, folder)
            result["models"]["yolov8n"][str(size)]["map50_95"] = map_yolo(args.yolo, size, images, folder)
        if args.profile:
            result["operator_ms"] = {m: operator_times(graphs[m, args.sizes[0]], args.threads, args.runs, folder)
                                     for m in ("ours", "yolov8n")}
    if args.plot:
        plot(result, args.plot)
        result["plot"] = str(args.plot)
    return emit(result, args.json)


if __name__ == "__main__":
    main()
