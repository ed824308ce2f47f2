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
import sys
from pathlib import Path

from nets.weights import WeightsError
from utils.config.load import add_config_args
from utils.config.schema import ConfigError
from utils.console import one_line_errors, setup_logging
from utils.data.records import DataError
from utils.infer.backend import BackendError, add_precision_arg
from utils.infer.evaluation import evaluate_run
from utils.metrics.coco import ResultsFileError
from utils.runtime import DeviceError


@one_line_errors(ConfigError, DataError, WeightsError, BackendError, DeviceError, ResultsFileError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights",
                        help=".pt checkpoint, a file of export.py (.onnx, OpenVINO .xml, .torchscript), or Darknet "
                        ".weights with --config")
    parser.add_argument("--detections", metavar="JSON", help="score these detections instead of running a model: a COCO "
                        "results list (image_id 1..N in the split's order or the image's file name, category_id = "
                        "class + 1, bbox [x, y, w, h] in pixels, score), e.g. another detector's; needs --config")
    add_config_args(parser)
    parser.add_argument("--split", nargs="+", help="splits to evaluate (default: the config's data.val_splits)")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: auto, a GPU where there is one)")
    add_precision_arg(parser)
    parser.add_argument("--save-dir", default="runs/eval", help="parent of the run folder (exp, exp2, ...)")
    parser.add_argument("--plots", action="store_true", help="write confusion_matrix.png, PR_curve.png, P_curve.png, "
                        "R_curve.png and F1_curve.png")
    parser.add_argument("--json", metavar="PATH", help="write the metrics as JSON")
    args = parser.parse_args(argv)
    if (args.weights is None) == (args.detections is None):
        parser.error("give --weights (a model to run) or --detections (results to score), one of the two")
    if args.detections and args.config is None:
        parser.error("--detections needs --config, for the class names and the split")
    setup_logging()
    report = evaluate_run(args.weights, args.detections, args.config, args.overrides, args.split, args.device,
                          args.precision, args.save_dir, args.plots)
    print(report.heading)
    print(report.table)
    if args.json:
        Path(args.json).write_text((report.out_dir / "metrics.json").read_text())
    print(f"results in {report.out_dir} (detections.json in COCO results format, ground_truth.json in COCO format)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
