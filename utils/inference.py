"""Inference shared by predict.py, eval.py and export.py: one backend over a PyTorch checkpoint or an
ONNX file, the sources predict reads, and the drawing of detections.

    backend = load_backend("best.pt")              # or "best.onnx", or Darknet .weights with config=
    maps = backend(images)                         # letterboxed float batch [B, 3, S, S] -> raw maps by stride
    dets = detect(maps, backend.spec, cfg.eval)    # utils.engine.detect

An ONNX file made by export.py carries what a checkpoint carries (class names, anchors, model
name, input size, the config) as JSON in its metadata, so either file alone is enough.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from utils.config.load import apply_overrides, config_from_dict, load_config
from utils.config.schema import Config
from utils.postprocess import DecodeSpec

ONNX_METADATA_KEY = "yolov4"  # metadata_props entry holding the JSON description of the model
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")


# --------------------------------------------------------------------------- backends


@dataclass
class Backend:
    """Raw maps ``[B, A * (5 + C), H, W]`` (stride ascending) from a letterboxed batch, by PyTorch or ONNX Runtime."""

    kind: str  # "pytorch" | "onnxruntime"
    cfg: Config
    class_names: list[str]
    anchors: list[tuple[float, float]]
    spec: DecodeSpec
    input_size: int  # the size the model was trained or exported at
    device: torch.device
    model: torch.nn.Module | None = None
    session: Any = None  # onnxruntime.InferenceSession
    fixed_batch: int | None = None  # an ONNX graph exported without --dynamic takes only this batch
    fixed_size: bool = False  # ... and only its input size
    dtype: torch.dtype = torch.float32  # input dtype (float16 for a --half export; the model's for PyTorch)
    channels_last: bool = False  # PyTorch: the model and its input in channels_last

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        if self.model is not None:
            x = images.to(self.device, self.dtype, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return [o.float() for o in self.model(x)]
        x = images.to(self.dtype).cpu().numpy()
        if self.fixed_batch is not None and len(x) != self.fixed_batch:  # pad up to (or split into) the fixed batch
            outs = [self._run(chunk) for chunk in _chunks(x, self.fixed_batch)]
            return [torch.cat([o[i] for o in outs])[: len(x)] for i in range(len(outs[0]))]
        return self._run(x)

    def _run(self, x: np.ndarray) -> list[torch.Tensor]:
        outs = self.session.run(None, {self.session.get_inputs()[0].name: x})
        return [torch.from_numpy(np.asarray(o)).float() for o in outs]

    def check_size(self, size: int) -> int:
        if size % 32:
            raise SystemExit(f"error: --img-size must be a multiple of 32, got {size}")
        if self.fixed_size and size != self.input_size:
            raise SystemExit(f"error: this ONNX graph takes {self.input_size}x{self.input_size} inputs only "
                             f"(export it with --dynamic for other sizes); got --img-size {size}")
        return size


def _chunks(x: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for i in range(0, len(x), n):
        chunk = x[i:i + n]
        if len(chunk) < n:
            chunk = np.concatenate([chunk, np.zeros((n - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        yield chunk


def model_metadata(cfg: Config, class_names: Sequence[str], anchors: Sequence[Sequence[float]], model) -> dict[str, Any]:
    """What an exported graph needs to be used alone (stored as JSON in its metadata)."""
    return {"model_name": model.name, "class_names": list(class_names), "anchors": [list(map(float, a)) for a in anchors],
            "anchor_masks": [list(m) for m in model.anchor_masks], "strides": list(model.strides),
            "input_size": cfg.model.input_size, "config": cfg.to_dict()}


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_precision_arg(parser) -> None:
    """predict.py's and eval.py's ``--precision`` (see :func:`load_backend`)."""
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                        help="PyTorch weights: bf16 is faster on CPUs with native bfloat16 (AVX512-BF16, AMX); fp16 needs CUDA")


def load_backend(weights: str | Path, config: str | Path | None = None, overrides: Sequence[str] = (),
                 device: str | torch.device = "cpu", fuse: bool = True, precision: str = "fp32",
                 channels_last: bool | None = None) -> Backend:
    """A ``.pt`` checkpoint or Darknet ``.weights`` (with ``config``) through PyTorch, fused by default;
    a ``.onnx`` file through ONNX Runtime (its CPU provider, or CUDA's when ``device`` is CUDA).

    PyTorch only: ``precision`` fp32 | bf16 | fp16 casts the model and its input (outputs come
    back as float32); bf16 pays off on CPUs with native bfloat16 (AVX512-BF16, AMX), fp16 needs
    CUDA. ``channels_last`` runs the model in that memory layout; by default on the CPU, where it
    is faster for these convolutions (bench/bench_infer.py), and on CUDA in half precision only.
    An ONNX graph's precision is set at export.
    """
    device = torch.device(device)
    weights = Path(weights)
    if precision not in PRECISIONS:
        raise SystemExit(f"error: precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if weights.suffix.lower() != ".onnx":
        from utils.engine import load_for_inference, warn_if_bf16_emulated

        if precision == "fp16" and device.type != "cuda":
            raise SystemExit("error: fp16 inference needs a CUDA device; on the CPU use bf16")
        if precision == "bf16":
            warn_if_bf16_emulated(device, "--precision bf16")
        model, cfg, classes, anchors = load_for_inference(weights, config, overrides, device)
        if fuse:
            model.fuse()
        model.to(PRECISIONS[precision])
        if channels_last is None:
            channels_last = device.type == "cpu" or precision != "fp32"
        if channels_last:
            model.to(memory_format=torch.channels_last)
        spec = DecodeSpec.for_model(model, anchors, cfg.model.scale_x_y)
        return Backend("pytorch", cfg, classes, anchors, spec, cfg.model.input_size, device, model=model,
                       dtype=PRECISIONS[precision], channels_last=channels_last)
    if precision != "fp32":
        raise SystemExit("error: an ONNX graph runs in the precision it was exported in (export.py --half); "
                         f"--precision {precision} applies to .pt and .weights files")
    if not weights.is_file():
        raise SystemExit(f"error: weights file not found: {weights}")
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit("error: running an .onnx file needs onnxruntime (pip install onnxruntime)") from None
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(weights), providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable or invalid graphs
        raise SystemExit(f"error: {weights} is not a usable ONNX graph: {e}") from None
    raw = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    if raw is None:
        raise SystemExit(f"error: {weights} has no '{ONNX_METADATA_KEY}' metadata; export it with export.py")
    meta = json.loads(raw)
    cfg = load_config(config, overrides) if config else apply_overrides(config_from_dict(meta["config"], str(weights)),
                                                                         overrides)
    anchors = [tuple(a) for a in meta["anchors"]]
    sxy = tuple(float(cfg.model.scale_x_y[s.bit_length() - 4]) for s in meta["strides"])
    spec = DecodeSpec(tuple(anchors), tuple(tuple(m) for m in meta["anchor_masks"]), tuple(meta["strides"]), sxy)
    shape = session.get_inputs()[0].shape  # [batch, 3, height, width]; symbolic axes are strings
    fixed_batch = shape[0] if isinstance(shape[0], int) else None
    fixed_size = isinstance(shape[2], int)
    dtype = torch.float16 if "float16" in session.get_inputs()[0].type else torch.float32
    return Backend("onnxruntime", cfg, list(meta["class_names"]), anchors, spec, int(meta["input_size"]),
                   torch.device("cpu"), session=session, fixed_batch=fixed_batch, fixed_size=fixed_size, dtype=dtype)


# --------------------------------------------------------------------------- sources


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


# --------------------------------------------------------------------------- drawing


def class_colour(c: int) -> tuple[int, int, int]:
    """A stable BGR colour per class index: hues spaced by the golden ratio, so neighbours differ."""
    r, g, b = colorsys.hsv_to_rgb((c * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_detections(img: np.ndarray, dets: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Boxes with "name 0.87" labels drawn on a copy of the BGR image ``img``.

    ``dets [K, 6]`` = (x1, y1, x2, y2, score, class) in the image's pixels. Line width and
    text follow the image size; a label sits above its box, or inside it at the top when there
    is no room above, and is shifted to stay within the image. Low scores are drawn first, so
    the best boxes end on top.
    """
    out = img.copy()
    h, w = out.shape[:2]
    lw = max(1, round((h + w) / 2 * 0.003))
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, lw / 3)
    thick = max(1, lw - 1)
    for x1, y1, x2, y2, score, c in sorted(dets.tolist(), key=lambda d: d[4]):
        c = int(c)
        colour = class_colour(c)
        p1 = (int(round(x1)), int(round(y1)))
        p2 = (int(round(x2)), int(round(y2)))
        cv2.rectangle(out, p1, p2, colour, lw, cv2.LINE_AA)
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        label = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, font, scale, thick)
        th += base
        x = min(max(p1[0], 0), max(w - tw - 2, 0))
        y = p1[1] - th - 2 if p1[1] - th - 2 >= 0 else max(p1[1], 0)  # above the box, else just inside it
        y = min(y, max(h - th - 2, 0))
        cv2.rectangle(out, (x, y), (x + tw + 2, y + th + 2), colour, -1, cv2.LINE_AA)
        luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
        text_colour = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        cv2.putText(out, label, (x + 1, y + th - base + 1), font, scale, text_colour, thick, cv2.LINE_AA)
    return out


def objectness_heatmap(maps: Sequence[torch.Tensor], num_anchors: int, size: int) -> np.ndarray:
    """``[B, size, size]`` float32 in [0, 1]: per pixel of the letterboxed input, the highest objectness
    over anchors and levels (each level's map resized to the input)."""
    out = None
    for raw in maps:
        b, ch, h, w = raw.shape
        obj = raw.float().view(b, num_anchors, ch // num_anchors, h, w)[:, :, 4].sigmoid().amax(1, keepdim=True)
        up = torch.nn.functional.interpolate(obj, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        out = up if out is None else torch.maximum(out, up)
    return out.cpu().numpy()


def overlay_heatmap(img: np.ndarray, heat: np.ndarray, info) -> np.ndarray:
    """Blend a letterboxed heatmap (``info``: its utils.augment.Letterbox) onto the original image."""
    h, w = img.shape[:2]
    x0, y0 = int(round(info.pad_x)), int(round(info.pad_y))
    nw, nh = int(round(w * info.scale_x)), int(round(h * info.scale_y))
    crop = heat[y0:y0 + max(nh, 1), x0:x0 + max(nw, 1)]
    crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.clip(crop * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(img, 0.55, colour, 0.45, 0)
