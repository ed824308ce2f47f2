"""One backend over a PyTorch checkpoint, Darknet ``.weights``, or a graph of export.py (ONNX, OpenVINO IR,
TorchScript), for predict.py, eval.py, export.py and the Python API.

    backend = load_backend("best.pt")              # "best.onnx", "best_openvino/best.xml", "best.torchscript",
                                                   # or Darknet .weights with config=
    dets = backend.detect(images, cfg.eval)        # letterboxed float batch [B, 3, S, S] -> per image [K, 6]
    maps = backend(images)                         # the raw maps by stride (an --nms graph: its four outputs)

An exported file carries what a checkpoint carries (class names, anchors, model name, input size, the
config) as JSON (utils.infer.export), so any of these files alone is enough."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nets.box_coding import LevelSpec
from nets.darknet import looks_like_darknet
from nets.weights import WeightsError, load_weights
from nets.yolo import YOLO, build_model
from utils.checkpoint import ModelCard, read_run
from utils.config.files import read_anchors, read_classes
from utils.config.load import load_config
from utils.config.schema import Config
from utils.infer.postprocess import detect
from utils.runtime import inference_precision, warn_if_bf16_emulated


class BackendError(ValueError):
    """A backend that cannot be built or run as asked (precision, device, image size, ONNX Runtime)."""


METADATA_KEY = "yolov4"  # where an exported file holds the JSON description of its model (utils.infer.export)


@dataclass
class Backend:
    """Raw maps ``[B, A * (5 + C), H, W]`` (stride ascending) from a letterboxed batch, by PyTorch (a checkpoint,
    Darknet weights, TorchScript), ONNX Runtime or OpenVINO; :meth:`detect` turns them into detections."""

    kind: str  # "pytorch" | "torchscript" | "onnxruntime" | "openvino"
    cfg: Config
    class_names: list[str]
    anchors: list[tuple[float, float]]
    spec: LevelSpec
    input_size: int  # the size the model was trained or exported at
    device: torch.device
    model: torch.nn.Module | None = None  # PyTorch and TorchScript
    session: Any = None  # onnxruntime.InferenceSession, or an OpenVINO CompiledModel
    fixed_batch: int | None = None  # an ONNX graph exported without --dynamic takes only this batch
    fixed_size: bool = False  # ... and only its input size
    dtype: torch.dtype = torch.float32  # input dtype (float16 for a --half export; the model's for PyTorch)
    channels_last: bool = False  # PyTorch: the model and its input in channels_last
    precision: str = "fp32"  # what --precision resolved to (fp32 | bf16 | fp16)
    nms: dict[str, Any] | None = None  # an --nms graph: the conf, iou and max_det fixed in it

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
        if self.kind == "openvino":
            result = self.session(x)
            outs = [result[o] for o in self.session.outputs]
        else:
            outs = self.session.run(None, {self.session.get_inputs()[0].name: x})
        return [torch.from_numpy(np.asarray(o)).float() for o in outs]

    def detect(self, images: torch.Tensor, eval_cfg) -> list[torch.Tensor]:
        """Per image ``[K, 6]`` (x1, y1, x2, y2, score, class) in input pixels: decoding and NMS with
        ``eval_cfg`` (utils.config.schema.EvalConfig), or those fixed in an --nms graph."""
        return self.detections(self(images), eval_cfg)

    def detections(self, outputs: list[torch.Tensor], eval_cfg) -> list[torch.Tensor]:
        """:meth:`detect` from outputs already computed."""
        if self.nms is None:
            return detect(outputs, self.spec, eval_cfg)
        num, boxes, scores, classes = outputs
        return [torch.cat((boxes[i, :k], scores[i, :k, None], classes[i, :k, None]), 1)
                for i, k in enumerate(num[:, 0].long().tolist())]

    def check_size(self, size: int) -> int:
        if size % 32:
            raise BackendError(f"--img-size must be a multiple of 32, got {size}")
        if self.fixed_size and size != self.input_size:
            raise BackendError(f"this ONNX graph takes {self.input_size}x{self.input_size} inputs only "
                               f"(export it with --dynamic for other sizes); got --img-size {size}")
        return size


def _chunks(x: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for i in range(0, len(x), n):
        chunk = x[i:i + n]
        if len(chunk) < n:
            chunk = np.concatenate([chunk, np.zeros((n - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        yield chunk


PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_precision_arg(parser) -> None:
    """predict.py's and eval.py's ``--precision`` (see :func:`load_backend`)."""
    parser.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                        help="PyTorch weights: auto = fp16 on CUDA, bf16 on a CPU with bfloat16 instructions (AVX512-BF16, "
                             "AMX), else fp32; ONNX graphs run as exported")


EXPORTED = {".onnx": "onnxruntime", ".xml": "openvino", ".torchscript": "torchscript"}  # suffix -> runtime


def load_backend(weights: str | Path, config: str | Path | None = None, overrides: Sequence[str] = (),
                 device: str | torch.device = "cpu", fuse: bool = True, precision: str = "fp32",
                 channels_last: bool | None = None) -> Backend:
    """A ``.pt`` checkpoint or Darknet ``.weights`` (with ``config``) through PyTorch, fused by default; a graph of
    export.py: ``.onnx`` through ONNX Runtime (its CPU provider, or CUDA's when ``device`` is CUDA), an OpenVINO
    ``.xml`` (or its folder) through OpenVINO on the CPU, a ``.torchscript`` file through torch.jit.

    PyTorch only: ``precision`` fp32 | bf16 | fp16 casts the model and its input (outputs come
    back as float32); bf16 pays off on CPUs with native bfloat16 (AVX512-BF16, AMX), fp16 needs
    CUDA; ``auto`` picks fp16 on CUDA, bf16 on such a CPU, else fp32. ``channels_last`` runs the model
    in that memory layout; by default on the CPU, where it is faster for these convolutions
    (bench/bench_infer.py), and on CUDA in half precision only. An exported graph runs in the precision
    it was exported in (OpenVINO: float32 arithmetic, whatever the CPU offers, so that it matches PyTorch's).
    """
    device = torch.device(device)
    weights = Path(weights)
    if weights.is_dir() and len(xml := sorted(weights.glob("*.xml"))) == 1:  # an OpenVINO export's folder
        weights = xml[0]
    runtime = EXPORTED.get(weights.suffix.lower())
    if precision == "auto":
        precision = "fp32" if runtime else inference_precision("auto", device)
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of auto, {', '.join(PRECISIONS)}, got '{precision}'")
    if runtime is None:
        return _pytorch_backend(weights, config, overrides, device, fuse, precision, channels_last)
    if precision != "fp32":
        raise BackendError("an exported graph runs in the precision it was exported in (export.py --half); "
                           f"--precision {precision} applies to .pt and .weights files")
    if not weights.is_file():
        raise WeightsError(f"weights file not found: {weights}")
    loader = {"onnxruntime": _onnx_session, "openvino": _openvino_model, "torchscript": _torchscript_model}[runtime]
    meta, parts = loader(weights, device)
    card = ModelCard.from_dict(meta, weights)
    cfg = card.run_config(config, overrides, str(weights))
    spec = LevelSpec.of(card.anchors, meta["strides"], meta["anchor_masks"], cfg.model.scale_x_y)
    return Backend(runtime, cfg, card.class_names, card.anchors, spec, card.input_size, **parts, nms=meta.get("nms"))


def _pytorch_backend(weights: Path, config, overrides, device: torch.device, fuse: bool, precision: str,
                     channels_last: bool | None) -> Backend:
    if precision == "fp16" and device.type != "cuda":
        raise BackendError("fp16 inference needs a CUDA device; on the CPU use bf16")
    if precision == "bf16":
        warn_if_bf16_emulated(device, "--precision bf16")
    model, cfg, classes, anchors = load_model(weights, config, overrides, device)
    if fuse:
        model.fuse()
    model.to(PRECISIONS[precision])
    if channels_last is None:
        channels_last = device.type == "cpu" or precision != "fp32"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    spec = LevelSpec.for_model(model, anchors, cfg.model.scale_x_y)
    return Backend("pytorch", cfg, classes, anchors, spec, cfg.model.input_size, device, model=model,
                   dtype=PRECISIONS[precision], channels_last=channels_last, precision=precision)


def _metadata(raw: str | None, weights: Path) -> dict[str, Any]:
    if raw is None:
        raise BackendError(f"{weights} has no '{METADATA_KEY}' metadata; export it with export.py")
    return json.loads(raw)


def _onnx_session(weights: Path, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendError("running an .onnx file needs onnxruntime (pip install onnxruntime)") from None
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(weights), providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable or invalid graphs
        raise BackendError(f"{weights} is not a usable ONNX graph: {e}") from None
    meta = _metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), weights)
    shape = session.get_inputs()[0].shape  # [batch, 3, height, width]; symbolic axes are strings
    dtype = torch.float16 if "float16" in session.get_inputs()[0].type else torch.float32
    return meta, {"device": torch.device("cpu"), "session": session, "fixed_batch": shape[0] if isinstance(shape[0], int)
                  else None, "fixed_size": isinstance(shape[2], int), "dtype": dtype,
                  "precision": "fp16" if dtype == torch.float16 else "fp32"}


def _openvino_model(weights: Path, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        import openvino as ov
    except ImportError:
        raise BackendError("running an OpenVINO model needs the openvino package (pip install openvino)") from None
    core = ov.Core()
    try:
        model = core.read_model(str(weights))
    except Exception as e:  # openvino raises RuntimeError subclasses of its own
        raise BackendError(f"{weights} is not a usable OpenVINO model: {e}") from None
    raw = model.get_rt_info([METADATA_KEY]).astype(str) if model.has_rt_info([METADATA_KEY]) else None
    meta = _metadata(raw, weights)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return meta, {"device": torch.device("cpu"), "session": compiled, "fixed_batch": 1, "fixed_size": True}


def _torchscript_model(weights: Path, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 calls TorchScript deprecated; it still runs
            model = torch.jit.load(str(weights), map_location=device, _extra_files=extra)
    except Exception as e:  # torch.jit raises RuntimeError and others for files that are not TorchScript archives
        raise BackendError(f"{weights} is not a usable TorchScript model: {e}") from None
    meta = _metadata(extra[f"{METADATA_KEY}.json"] or None, weights)
    dtype = next(model.parameters()).dtype
    return meta, {"device": device, "model": model.eval(), "fixed_size": True, "dtype": dtype,
                  "precision": "fp16" if dtype == torch.float16 else "fp32"}


def load_model(weights: str | Path, config: str | Path | None = None, overrides: Sequence[str] = (),
               device: str | torch.device = "cpu") -> tuple[YOLO, Config, list[str], list[tuple[float, float]]]:
    """(model in eval mode, config, class names, anchors) from a ``.pt`` checkpoint of train.py, which carries
    them all; or, with a config that gives them, from Darknet ``.weights`` or a bare state_dict (the classic
    PyTorch port's ``.pth`` included: nets.weights.load_weights renames it)."""
    weights = Path(weights)
    if not weights.is_file():
        raise WeightsError(f"weights file not found: {weights}")
    if not (looks_like_darknet(weights) and weights.suffix != ".pt"):
        try:
            run = read_run(weights)
        except WeightsError:
            if config is None:
                raise
        else:
            card = run.card
            model = build_model(card.model_name, len(card.class_names))
            model.load_state_dict(run.weights)
            return model.to(device).eval(), card.run_config(config, overrides, str(weights)), card.class_names, card.anchors
    if config is None:
        raise WeightsError(f"{weights}: Darknet .weights carry no class names or anchors; give --config too")
    cfg = load_config(config, overrides)
    classes, anchors = read_classes(cfg.data.classes_path), read_anchors(cfg.model.anchors_path)
    model = build_model(cfg.model.name, len(classes))
    load_weights(model, weights)
    return model.to(device).eval(), cfg, classes, anchors
