"""Draw detections on images, folders, videos and webcams.

    python predict.py --weights runs/shapes/exp/best.pt --source VOCdevkit/SHAPES/JPEGImages/000001.jpg
    python predict.py --weights best.pt --source photos/ --save-txt --save-json
    python predict.py --weights best.onnx --source clip.mp4           # an export.py graph, via onnxruntime
    python predict.py --weights yolov4.weights --config voc.yaml --source 0 --show   # Darknet weights, webcam 0

A ``.pt`` checkpoint (or an exported ``.onnx``) carries the class names, anchors, model and input
size, so ``--weights`` and ``--source`` are enough. Results go to ``runs/predict/exp`` (exp2, ...):
the drawn images, mp4 videos with the input's frame size and fps, ``labels/*.txt`` (``--save-txt``:
a line per box, ``name score x1 y1 x2 y2`` in original pixels) and ``predictions.json``
(``--save-json``: COCO results format, bbox ``[x, y, w, h]`` in original pixels). An unreadable
image is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from nets.weights import WeightsError
from utils.config.load import add_config_args
from utils.config.schema import ConfigError
from utils.console import one_line_errors, progress
from utils.data.augment import letterbox, unletterbox_boxes
from utils.data.dataset import _to_tensor
from utils.data.images import ImageReadError, read_image
from utils.infer.backend import Backend, BackendError, add_precision_arg, load_backend
from utils.infer.draw import draw_detections, objectness_heatmap, overlay_heatmap
from utils.infer.postprocess import detect
from utils.runtime import DeviceError, next_run_dir, select_device

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")


@dataclass
class Source:
    """What ``--source`` names: a webcam index, a video file, or image files (one, or a folder's, recursively)."""

    kind: str  # "images" | "video" | "webcam"
    path: Path | None = None
    files: list[Path] = field(default_factory=list)
    camera: int = 0


def resolve_source(source: str) -> Source:
    """A clear error for a missing path or an empty folder; a digit string is a webcam index."""
    if source.isdigit():
        return Source("webcam", camera=int(source))
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise SystemExit(f"error: no images ({', '.join(IMAGE_EXTENSIONS)}) under {path}")
        return Source("images", path, files)
    if not path.exists():
        raise SystemExit(f"error: source not found: {path}")
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return Source("video", path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return Source("images", path.parent, [path])
    raise SystemExit(f"error: {path} is neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a video "
                     f"({', '.join(VIDEO_EXTENSIONS)})")


class Timer:
    """Accumulated seconds per stage (pre-processing, model, post-processing)."""

    def __init__(self, sync: bool) -> None:
        self.total = Counter()
        self.sync = sync

    def __call__(self, stage: str, t0: float) -> float:
        if self.sync:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        self.total[stage] += t1 - t0
        return t1


class Predictor:
    """Batches of BGR images -> detections in original pixels, drawn and written as asked."""

    def __init__(self, backend: Backend, args: argparse.Namespace, save_dir: Path | None) -> None:
        self.backend, self.args, self.save_dir = backend, args, save_dir
        self.size = backend.check_size(args.img_size or backend.input_size)
        eval_cfg = backend.cfg.eval
        eval_cfg.conf_thres, eval_cfg.nms_iou, eval_cfg.max_det = args.conf, args.iou, args.max_det
        eval_cfg.agnostic_nms = args.agnostic_nms or eval_cfg.agnostic_nms
        self.eval_cfg = eval_cfg
        names = backend.class_names
        self.keep_classes = None
        if args.classes is not None:
            bad = [c for c in args.classes if not (c.isdigit() and int(c) < len(names)) and c not in names]
            if bad:
                raise SystemExit(f"error: --classes {' '.join(bad)}: not among the model's classes ({', '.join(names)})")
            self.keep_classes = sorted({int(c) if c.isdigit() else names.index(c) for c in args.classes})
        self.timer = Timer(backend.device.type == "cuda")
        self.counts: Counter[str] = Counter()
        self.images = 0
        self.json_rows: list[dict] = []
        if save_dir is not None and args.save_txt:
            (save_dir / "labels").mkdir(parents=True, exist_ok=True)

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Detections ``[K, 6]`` (x1, y1, x2, y2, score, class) in each frame's own pixels."""
        t0 = time.perf_counter()
        boxed = [letterbox(f, self.size) for f in frames]
        batch = torch.stack([_to_tensor(b) for b, _ in boxed]).float().div_(255)
        t0 = self.timer("pre", t0)
        maps = self.backend(batch)
        t0 = self.timer("model", t0)
        found = detect(maps, self.backend.spec, self.eval_cfg)
        out = []
        for d, frame, (_, info) in zip(found, frames, boxed, strict=True):
            d = d.cpu().numpy()
            if self.keep_classes is not None:
                d = d[np.isin(d[:, 5].astype(int), self.keep_classes)]
            d[:, :4] = unletterbox_boxes(d[:, :4], info, frame.shape[1], frame.shape[0])
            out.append(d)
        self.timer("post", t0)
        self.images += len(frames)
        for d in out:
            self.counts.update(self.backend.class_names[int(c)] for c in d[:, 5])
        self.heat = (objectness_heatmap(maps, len(self.backend.spec.anchor_masks[0]), self.size), [i for _, i in boxed]) \
            if self.args.heatmap else None
        return out

    def record(self, name: str, dets: np.ndarray, frame: np.ndarray, index: int) -> np.ndarray:
        """Write labels and JSON rows for one image; return it drawn."""
        names = self.backend.class_names
        if self.save_dir is not None and self.args.save_txt:
            lines = [f"{names[int(c)]} {s:.4f} {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}" for x1, y1, x2, y2, s, c in dets.tolist()]
            (self.save_dir / "labels" / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
        if self.args.save_json:
            for x1, y1, x2, y2, s, c in dets.tolist():
                self.json_rows.append({"image_id": index, "file_name": name, "category_id": int(c) + 1,
                                       "category": names[int(c)], "bbox": [round(x1, 2), round(y1, 2),
                                                                           round(x2 - x1, 2), round(y2 - y1, 2)],
                                       "score": round(s, 5)})
        return draw_detections(frame, dets, names)


def show(img: np.ndarray, wait_ms: int) -> bool:
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


def run_images(pred: Predictor, source: Source, args: argparse.Namespace, skipped: list[str]) -> None:
    files = source.files
    bar = progress(total=len(files), desc="images", unit="img", enabled=len(files) > 1 and not args.json)
    for start in range(0, len(files), args.batch):
        chunk = files[start:start + args.batch]
        frames, names = [], []
        for path in chunk:
            try:
                frames.append(read_image(path))
                names.append(path)
            except ImageReadError as e:
                skipped.append(str(path))
                tqdm.write(f"skipped {path}: {e}", file=sys.stderr)
        bar.update(len(chunk))
        if not frames:
            continue
        first = pred.images + 1
        for k, (path, frame, dets) in enumerate(zip(names, frames, pred(frames), strict=True)):
            rel = path.relative_to(source.path).with_suffix("")
            stem = "__".join(rel.parts)  # a folder's files keep distinct names however deep they sit
            drawn = pred.record(stem, dets, frame, first + k)
            if pred.save_dir is not None and not args.no_save:
                cv2.imwrite(str(pred.save_dir / f"{stem}{path.suffix}"), drawn)
                if pred.heat is not None:
                    heat, infos = pred.heat
                    cv2.imwrite(str(pred.save_dir / f"{stem}_heatmap.jpg"), overlay_heatmap(frame, heat[k], infos[k]))
            if args.show and not show(drawn, 0):
                return
    bar.close()


def run_stream(pred: Predictor, source: Source, args: argparse.Namespace) -> None:
    """A video file or a webcam, frame by frame in batches of ``--batch``; written as mp4."""
    cap = cv2.VideoCapture(source.camera if source.kind == "webcam" else str(source.path))
    if not cap.isOpened():
        what = f"webcam {source.camera}" if source.kind == "webcam" else str(source.path)
        raise SystemExit(f"error: cannot open {what}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if source.kind == "video" else 0
    stem = source.path.stem if source.kind == "video" else f"webcam{source.camera}"
    writer = None
    bar = progress(total=total or None, desc=stem, unit="frame", enabled=not args.json)
    index = 0
    try:
        while True:
            frames = []
            while len(frames) < (args.batch if source.kind == "video" else 1):
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(frame)
            if not frames:
                break
            for frame, dets in zip(frames, pred(frames), strict=True):
                index += 1
                drawn = pred.record(f"{stem}_{index}", dets, frame, index)
                if pred.save_dir is not None and not args.no_save:
                    if writer is None:
                        h, w = frame.shape[:2]
                        path = pred.save_dir / f"{stem}.mp4"
                        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    writer.write(drawn)
                if args.show and not show(drawn, 1):
                    return
            bar.update(len(frames))
    finally:
        bar.close()
        cap.release()
        if writer is not None:
            writer.release()


def benchmark(pred: Predictor, args: argparse.Namespace, frames: list[np.ndarray], runs: int = 20) -> dict:
    """Latency per stage (median ms per batch) and images per second on ``frames``."""
    for _ in range(3):
        pred(frames)
    per_run: dict[str, list[float]] = {"pre": [], "model": [], "post": []}
    for _ in range(runs):
        pred.timer.total.clear()
        pred(frames)
        for k in per_run:
            per_run[k].append(pred.timer.total[k] * 1e3)
    med = {k: float(np.median(v)) for k, v in per_run.items()}
    total = sum(med.values())
    return {"batch": len(frames), "img_size": pred.size, "backend": pred.backend.kind, "ms_per_batch": {
        **{k: round(v, 2) for k, v in med.items()}, "total": round(total, 2)}, "fps": round(len(frames) * 1e3 / total, 1)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help=".pt checkpoint, export.py .onnx, or Darknet .weights with --config")
    parser.add_argument("--source", required=True, help="image, folder (recursive), video file, or webcam index")
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
    parser.add_argument("--save-txt", action="store_true", help="labels/<name>.txt: name score x1 y1 x2 y2 per box")
    parser.add_argument("--save-json", action="store_true", help="predictions.json in COCO results format")
    parser.add_argument("--no-save", action="store_true", help="do not write drawn images or videos")
    parser.add_argument("--show", action="store_true", help="display results (needs a display and opencv-python)")
    parser.add_argument("--heatmap", action="store_true", help="also save an objectness heatmap per image")
    parser.add_argument("--json", action="store_true", help="print a JSON summary (counts per class, timings) only")
    parser.add_argument("--benchmark", action="store_true", help="time pre-processing, model and post-processing, print FPS")
    return parser


@one_line_errors(ConfigError, WeightsError, BackendError, DeviceError)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1:
        raise SystemExit("error: --batch must be at least 1")
    source = resolve_source(args.source)
    if args.show and not display_available():
        print("note: no display available (or opencv-python-headless installed); --show is ignored", file=sys.stderr)
        args.show = False
    device = select_device(args.device)
    backend = load_backend(args.weights, args.config, args.overrides, device, precision=args.precision)
    wants_files = not args.no_save or args.save_txt or args.save_json
    save_dir = next_run_dir(args.save_dir) if wants_files and not args.benchmark else None
    pred = Predictor(backend, args, save_dir)
    skipped: list[str] = []

    if args.benchmark:
        frames = []
        for path in source.files[: args.batch] if source.kind == "images" else []:
            try:
                frames.append(read_image(path))
            except ImageReadError:
                continue
        if not frames:
            raise SystemExit("error: --benchmark needs an image or a folder of images as --source")
        print(json.dumps(benchmark(pred, args, frames), indent=2))
        return 0

    t0 = time.perf_counter()
    if source.kind == "images":
        run_images(pred, source, args, skipped)
    else:
        run_stream(pred, source, args)
    seconds = time.perf_counter() - t0
    if args.show:
        cv2.destroyAllWindows()
    if save_dir is not None and args.save_json:
        (save_dir / "predictions.json").write_text(json.dumps(pred.json_rows))
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
