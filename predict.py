"""Draw detections on images, folders, globs, lists, URLs, videos, streams and webcams.

    python predict.py --weights runs/shapes/exp/best.pt --source VOCdevkit/SHAPES/JPEGImages/val_00000.jpg
    python predict.py --weights best.pt --source photos/ --save-txt --save-conf --save-crop --save-json
    python predict.py --weights best.pt --source "photos/**/*.png"    # a glob (quoted); or a .txt list of paths
    python predict.py --weights best.onnx --source clip.mp4           # an export.py graph, via onnxruntime
    python predict.py --weights best.pt --source rtsp://192.168.1.20:554/stream   # or an http(s) stream or URL
    python predict.py --weights yolov4.weights --config voc.yaml --source 0 --show   # Darknet weights, webcam 0

A ``.pt`` checkpoint (or an exported graph) carries the class names, anchors, model and input
size, so ``--weights`` and ``--source`` are enough. Results go to ``runs/predict/exp`` (exp2, ...):
the drawn images, mp4 videos with the input's frame size and fps, ``labels/*.txt`` (``--save-txt``:
YOLO format, ``class cx cy w h`` normalized, ``--save-conf`` adds the score), ``labels_voc/*.txt``
(``--save-txt-voc``: ``name score x1 y1 x2 y2`` in pixels), ``crops/<class>/`` (``--save-crop``) and
``predictions.json`` (``--save-json``: COCO results format, bbox ``[x, y, w, h]`` in original pixels).
An unreadable image is reported and skipped; a live stream that drops is opened again a few times, and
what was written before it ended is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import cv2

from nets.weights import WeightsError
from utils.config.load import add_config_args
from utils.config.schema import ConfigError
from utils.console import one_line_errors
from utils.data.images import ImageReadError, read_image
from utils.infer.backend import BackendError, add_precision_arg, load_backend
from utils.infer.outputs import Outputs
from utils.infer.predictor import PredictError, Predictor, benchmark
from utils.infer.sources import SourceError, frames, resolve_source
from utils.runtime import DeviceError, next_run_dir, select_device


def show(img, wait_ms: int) -> bool:
    """Display a result in the "predict" window (an image until a key is pressed, a frame for 1 ms);
    False when the key was q or Esc."""
    cv2.imshow("predict", img)
    return cv2.waitKey(wait_ms) & 0xFF not in (ord("q"), 27)


def display_available() -> bool:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("predict")
        cv2.destroyWindow("predict")
        return True
    except cv2.error:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True,
                        help=".pt checkpoint, a file of export.py (.onnx, OpenVINO .xml, .torchscript), or Darknet "
                        ".weights with --config")
    parser.add_argument("--source", required=True, help="image, folder (recursive), glob, .txt list of images, "
                        "video file, http(s) image or video URL, rtsp:// / http:// stream, or webcam index")
    add_config_args(parser)
    parser.add_argument("--conf", type=float, default=0.25, help="score threshold (objectness x class probability)")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=300, help="boxes per image at most")
    parser.add_argument("--classes", nargs="+", help="keep only these classes (names or indices)")
    parser.add_argument("--agnostic-nms", action="store_true", help="NMS across classes")
    parser.add_argument("--img-size", type=int, help="input size, a multiple of 32 (default: the model's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch", type=int, default=8, help="images (or video frames) per forward pass")
    add_precision_arg(parser)
    parser.add_argument("--save-dir", default="runs/predict", help="parent of the run folder (exp, exp2, ...)")
    parser.add_argument("--save-txt", action="store_true",
                        help="labels/<name>.txt in YOLO format: class cx cy w h per box, normalized to 0..1")
    parser.add_argument("--save-conf", action="store_true", help="with --save-txt: the score at the end of each line")
    parser.add_argument("--save-txt-voc", action="store_true",
                        help="labels_voc/<name>.txt: name score x1 y1 x2 y2 in pixels (VOC mAP tools' detection-results)")
    parser.add_argument("--save-crop", action="store_true", help="crops/<class>/<name>_<k>.jpg: each box cut out")
    parser.add_argument("--save-json", action="store_true", help="predictions.json in COCO results format")
    parser.add_argument("--no-save", action="store_true", help="do not write drawn images or videos")
    parser.add_argument("--show", action="store_true", help="display results (needs a display and opencv-python)")
    parser.add_argument("--heatmap", action="store_true", help="also save an objectness heatmap per image")
    parser.add_argument("--json", action="store_true", help="print a JSON summary (counts per class, timings) only")
    parser.add_argument("--benchmark", action="store_true", help="time pre-processing, model and post-processing, print FPS")
    return parser


def predict_all(pred: Predictor, batches, out: Outputs, show_wait: int | None) -> None:
    """Each batch's detections written by ``out``; with ``show_wait`` (ms), shown until q or Esc."""
    for batch in batches:
        dets = pred([f.image for f in batch])
        for k, (frame, d) in enumerate(zip(batch, dets, strict=True)):
            heat = (pred.heat[0][k], pred.heat[1][k]) if pred.heat is not None else (None, None)
            drawn = out.add(frame, d, *heat)
            if show_wait is not None and not show(drawn, show_wait):
                return


@one_line_errors(ConfigError, WeightsError, BackendError, DeviceError, SourceError, PredictError)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1:
        raise PredictError("--batch must be at least 1")
    source = resolve_source(args.source)
    if args.show and not display_available():
        print("note: no display available (or opencv-python-headless installed); --show is ignored", file=sys.stderr)
        args.show = False
    device = select_device(args.device)
    backend = load_backend(args.weights, args.config, args.overrides, device, precision=args.precision)
    pred = Predictor(backend, args.conf, args.iou, args.max_det, args.classes, args.agnostic_nms, args.img_size,
                     heatmap=args.heatmap)
    if args.benchmark:
        images = []
        for path in source.files[: args.batch]:
            try:
                images.append(read_image(path))
            except ImageReadError:
                continue
        if not images:
            raise SourceError("--benchmark needs an image or a folder of images as --source")
        print(json.dumps(benchmark(pred, images), indent=2))
        return 0

    wants_files = not args.no_save or args.save_txt or args.save_txt_voc or args.save_crop or args.save_json
    save_dir = next_run_dir(args.save_dir) if wants_files else None
    out = Outputs(save_dir, backend.class_names, images=not args.no_save, txt=args.save_txt, conf=args.save_conf,
                  txt_voc=args.save_txt_voc, crops=args.save_crop, json_rows=args.save_json)
    skipped: list[str] = []
    t0 = time.perf_counter()
    with contextlib.closing(frames(source, args.batch, skipped, show_progress=not args.json)) as batches:
        try:
            predict_all(pred, batches, out, show_wait=(1 if source.stream else 0) if args.show else None)
        finally:
            out.close()
    seconds = time.perf_counter() - t0
    if args.show:
        cv2.destroyAllWindows()
    per_image = {k: round(v * 1e3 / max(pred.images, 1), 2) for k, v in pred.timer.total.items()}
    summary = {"source": args.source, "backend": backend.kind, "precision": backend.precision, "images": pred.images,
               "skipped": skipped,
               "detections": sum(pred.counts.values()), "per_class": dict(sorted(pred.counts.items())),
               "ms_per_image": per_image, "fps": round(pred.images / seconds, 1) if seconds else None,
               "save_dir": str(save_dir) if save_dir else None}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        found = ", ".join(f"{n} {k}" for k, n in summary["per_class"].items()) or "nothing"
        print(f"{pred.images} image(s), {summary['detections']} detections ({found}); "
              f"{per_image.get('pre', 0):.1f} ms pre, {per_image.get('model', 0):.1f} ms model, "
              f"{per_image.get('post', 0):.1f} ms post per image ({backend.kind}, {backend.precision})")
        if skipped:
            print(f"skipped {len(skipped)} unreadable file(s): {', '.join(skipped)}")
        if save_dir is not None:
            print(f"results in {save_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
