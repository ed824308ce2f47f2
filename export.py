"""Export a checkpoint: ONNX (raw maps, or with the decoding and NMS inside), OpenVINO IR, TorchScript.

    python export.py --weights runs/shapes/exp/best.pt                       # -> runs/shapes/exp/best.onnx
    python export.py --weights best.pt --nms --conf 0.25 --iou 0.45 --max-det 100   # boxes out, no Python needed
    python export.py --weights best.pt --simplify                            # onnxslim: fewer nodes
    python export.py --weights best.pt --format openvino [--half]            # -> best_openvino/best.xml (+ .bin)
    python export.py --weights best.pt --format torchscript                  # -> best.torchscript
    python export.py --weights yolov4.weights --config voc.yaml              # Darknet weights need a config

Every graph takes ``images`` (float32 RGB in [0, 1], ``[batch, 3, size, size]``, letterboxed as predict.py
does). By default it returns the raw maps ``out8``, ``out16``, ``out32`` (one per stride, ``[batch, A * (5 + C),
size / stride, size / stride]``), decoded by predict.py and eval.py in the code that serves PyTorch. With
``--nms`` (ONNX) it returns detections instead, batch first: ``num_dets [B, 1]``, ``boxes [B, max_det, 4]``
(x1, y1, x2, y2 in the letterboxed input's pixels), ``scores [B, max_det]``, ``classes [B, max_det]``, with
``--conf``, ``--iou`` and ``--max-det`` fixed in the graph. ``--dynamic`` leaves batch, height and width free
(with ``--nms``, the batch only); ``--half`` stores float16 weights (ONNX: input and outputs too; for GPU
runtimes). The class names, anchors, model name, input size and config travel inside the file, so predict.py,
eval.py and the Python API take it alone. The export is checked: the exported graph's outputs against
PyTorch's on a random input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nets.weights import WeightsError
from utils.config.load import add_config_args
from utils.config.schema import ConfigError
from utils.console import one_line_errors
from utils.infer.backend import BackendError
from utils.infer.export import FORMATS, NMSSettings, check_against_pytorch, export_model


@one_line_errors(ConfigError, WeightsError, BackendError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help=".pt checkpoint, or Darknet .weights with --config")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="export format")
    add_config_args(parser)
    parser.add_argument("--output", help="output path (default: beside the weights, named after them)")
    parser.add_argument("--img-size", type=int, help="input size, a multiple of 32 (default: the model's)")
    parser.add_argument("--dynamic", action="store_true", help="ONNX: free batch, height and width")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.add_argument("--half", action="store_true", help="float16 weights (ONNX: and input; for GPU runtimes)")
    parser.add_argument("--nms", action="store_true", help="ONNX: decoding and NMS inside the graph (boxes out)")
    parser.add_argument("--conf", type=float, default=0.25, help="--nms: score threshold fixed in the graph")
    parser.add_argument("--iou", type=float, default=0.45, help="--nms: NMS IoU threshold fixed in the graph")
    parser.add_argument("--max-det", type=int, default=300, help="--nms: boxes per image at most")
    parser.add_argument("--simplify", action="store_true", help="ONNX: simplify the graph with onnxslim")
    parser.add_argument("--json", metavar="PATH", help="write what was exported (path, size, node counts) as JSON")
    args = parser.parse_args(argv)
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise SystemExit("error: export needs the onnx package (pip install onnx onnxruntime)") from None
    nms = NMSSettings(args.conf, args.iou, args.max_det) if args.nms else None
    path, facts = export_model(args.weights, args.format, args.output, args.config, args.overrides, args.img_size,
                               args.dynamic, args.opset, args.half, nms, args.simplify)
    details = [f"{facts['bytes'] / 1e6:.1f} MB", f"{facts['img_size']} px"]
    if args.format == "onnx":
        details.append(f"opset {args.opset}")
    if "nodes" in facts:
        details.append(f"{facts['nodes']} nodes" + (f", {facts['nodes_simplified']} simplified"
                                                    if "nodes_simplified" in facts else ""))
    if nms:
        details.append(f"NMS inside: conf {nms.conf}, iou {nms.iou}, max_det {nms.max_det}")
    details += ["dynamic"] * args.dynamic + ["float16 weights"] * args.half
    print(f"wrote {path} ({', '.join(details)})")
    facts["path"] = str(path)
    try:
        facts["max_abs_diff"] = check_against_pytorch(args.weights, path, args.config, args.overrides)
    except BackendError as e:  # the runtime to check with is not installed
        print(f"note: not checked: {e}")
    else:
        what = "detections (boxes, scores)" if nms else "raw outputs"
        print(f"checked: {args.format} vs PyTorch {what} on a random input, max abs difference {facts['max_abs_diff']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(facts, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
