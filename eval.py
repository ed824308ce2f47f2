"""Evaluate a checkpoint: VOC mAP (07 11-point and all-point) and COCO-style mAP@[.5:.95].

    python eval.py --weights runs/voc/exp/best.pt [--split VOC2007/test] [--json out.json] [--plots]
    python eval.py --weights yolov4.weights --config voc.yaml          # Darknet weights need a config
    python eval.py --weights runs/voc/exp/best.onnx                    # an export.py graph, via onnxruntime
    python eval.py --detections other.json --config shapes.yaml       # another detector's COCO results

A ``.pt`` checkpoint carries its config, class names and anchors; ``--config`` and
``section.key=value`` overrides change them (e.g. ``eval.nms_iou=0.6``). Training-time
evaluation calls the same function (utils.train.engine.evaluate) with the same defaults:
letterboxed inputs, ``eval.conf_thres`` 0.001, the configured NMS.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nets.weights import WeightsError
from utils.config.files import read_classes, resolve_path
from utils.config.load import add_config_args, load_config
from utils.config.schema import ConfigError
from utils.console import one_line_errors
from utils.data.records import DataError
from utils.data.splits import load_records
from utils.data.synthetic import ensure_shapes
from utils.infer.backend import BackendError, add_precision_arg, load_backend
from utils.metrics.coco import ResultsFileError, coco_ground_truth, coco_results, read_coco_results
from utils.metrics.voc import format_table, per_class_table
from utils.runtime import DeviceError, next_run_dir, select_device
from utils.train.engine import evaluate, score_detections


@one_line_errors(ConfigError, DataError, WeightsError, BackendError, DeviceError, ResultsFileError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help=".pt checkpoint, export.py .onnx, or Darknet .weights with --config")
    parser.add_argument("--detections", metavar="JSON", help="score these detections instead of running a model: a COCO "
                        "results list (image_id 1..N in the split's order or the image's file name, category_id = "
                        "class + 1, bbox [x, y, w, h] in pixels, score), e.g. another detector's; needs --config")
    add_config_args(parser)
    parser.add_argument("--split", nargs="+", help="splits to evaluate (default: the config's data.val_splits)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the config's train.device)")
    add_precision_arg(parser)
    parser.add_argument("--save-dir", default="runs/eval", help="parent of the run folder (exp, exp2, ...)")
    parser.add_argument("--plots", action="store_true", help="write confusion_matrix.png, PR_curve.png, P_curve.png, "
                        "R_curve.png and F1_curve.png")
    parser.add_argument("--json", metavar="PATH", help="write the metrics as JSON")
    args = parser.parse_args(argv)

    if (args.weights is None) == (args.detections is None):
        parser.error("give --weights (a model to run) or --detections (results to score), one of the two")
    backend = None
    if args.detections:
        if args.config is None:
            parser.error("--detections needs --config, for the class names and the split")
        cfg = load_config(args.config, args.overrides)
        classes = read_classes(resolve_path(cfg.data.classes_path))
    else:
        device = select_device(args.device or "auto")
        backend = load_backend(args.weights, args.config, args.overrides, device, precision=args.precision)
        cfg, classes = backend.cfg, backend.class_names
        if args.config is None and Path(cfg.data.classes_path).exists() and read_classes(cfg.data.classes_path) != classes:
            print(f"note: {cfg.data.classes_path} differs from the checkpoint's class names; the checkpoint's are used")
    made = ensure_shapes(cfg, classes) if Path(cfg.data.classes_path).exists() else None
    if made:
        print(f"made the synthetic shapes set in {made}")
    splits = args.split or cfg.data.val_splits
    try:
        records, report = load_records(cfg.data, splits, classes)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    if backend is None:
        dets = read_coco_results(read_json(args.detections), records, len(classes), args.detections)
        result = score_detections(dets, records, len(classes), cfg.eval)
        how = f"the detections in {args.detections}"
    else:
        result = evaluate(backend, records, len(classes), backend.spec, backend.check_size(cfg.model.input_size),
                          cfg.eval, device, cfg.data.workers)
        how = f"{cfg.model.input_size} px ({backend.kind}, {backend.precision})"
    seconds = time.perf_counter() - t0
    rows = per_class_table(result, records, classes)
    skipped = f" ({result['unreadable']} could not be decoded and are left out)" if result["unreadable"] else ""
    print(f"{len(records)} images of {', '.join(splits)}{skipped}, {how}, {seconds:.1f} s")
    print(format_table(rows, result))

    out_dir = next_run_dir(args.save_dir)
    (out_dir / "detections.json").write_text(json.dumps(coco_results(result["dets"])))
    (out_dir / "ground_truth.json").write_text(json.dumps(coco_ground_truth(records, classes)))
    summary = {"weights": args.weights, "detections": args.detections, "splits": splits, "images": len(records),
               "unreadable": result["unreadable"],
               "seconds": round(seconds, 2),
               "precision": backend.precision if backend else None,
               "map50": result["map50"], "map50_07": result["map50_07"], "map50_95": result["map50_95"],
               "coco": {k: v for k, v in result["coco"].items() if k != "per_class_AP50_95"}, "per_class": rows}
    if args.plots:
        from utils.plots import plot_evaluation, plot_labels, save_batch_pictures

        plot_evaluation(result, classes, out_dir, cfg.eval.score_thres, cfg.eval.match_iou)
        plot_labels(records, classes, out_dir / "labels.png")
        save_batch_pictures(records, result["dets"], classes, out_dir)
    text = json.dumps(summary, indent=2, default=float)
    (out_dir / "metrics.json").write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(f"results in {out_dir} (detections.json in COCO results format, ground_truth.json in COCO format)")
    return 0


def read_json(path: str):
    """A JSON file's content; a file that is missing or not JSON is a ResultsFileError."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ResultsFileError(f"{path}: {e}") from None


if __name__ == "__main__":
    sys.exit(main())
