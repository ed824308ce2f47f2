"""A trained model written as a graph that runs without this repository: ONNX (raw maps, or with the decoding and
NMS inside), simplified ONNX (onnxslim), OpenVINO IR and TorchScript.

    path = export_model("best.pt", "onnx", nms=NMSSettings(conf=0.25, iou=0.45, max_det=300))

Every file carries the model's card (class names, anchors, model name, input size, config) and what its
decoding needs as JSON (ONNX: metadata ``yolov4``; OpenVINO: rt_info ``yolov4``; TorchScript: the extra file
``yolov4.json``), so utils.infer.backend.load_backend takes the file alone.

Graph outputs, batch first:

- raw maps (the default): ``out8``, ``out16``, ``out32``, one per stride, ``[B, A * (5 + C), S / s, S / s]``;
  decoding and NMS then run in Python, in the code that serves PyTorch;
- with NMS (``--nms``, ONNX only): ``num_dets [B, 1]`` int64, ``boxes [B, max_det, 4]`` float32 (x1, y1, x2, y2
  in the letterboxed input's pixels), ``scores [B, max_det]`` float32, ``classes [B, max_det]`` int64, best
  score first; the rows past ``num_dets`` are 0 (classes -1). The threshold, the IoU and ``max_det`` are fixed
  at export. As predict.py does: score = objectness x the best class probability, one class per box, NMS
  within each class (ONNX's NonMaxSuppression).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from nets.box_coding import LevelSpec
from utils.checkpoint import ModelCard
from utils.infer.backend import METADATA_KEY, Backend, BackendError, load_backend
from utils.infer.postprocess import decode_predictions

FORMATS = ("onnx", "openvino", "torchscript")
NMS_OUTPUTS = ("num_dets", "boxes", "scores", "classes")


@dataclass(frozen=True)
class NMSSettings:
    """The detection settings an ``--nms`` graph fixes: score threshold, NMS IoU, boxes per image at most."""

    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 300


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX's NonMaxSuppression: boxes ``[B, N, 4]`` (x1, y1, x2, y2) and scores ``[B, C, N]`` -> the kept
    (image, class, box) triples ``[K, 3]`` int64, per image and class at most ``max_per_class``, scores above
    ``conf``. Run eagerly (to trace the graph, and in tests) it gives the same triples by torchvision's nms."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, max_per_class: int, iou: float,
                conf: float) -> torch.Tensor:
        kept = [torch.zeros((0, 3), dtype=torch.int64)]
        for b in range(boxes.shape[0]):
            for c in range(scores.shape[1]):
                candidates = (scores[b, c] > conf).nonzero().flatten()
                order = torchvision.ops.nms(boxes[b, candidates], scores[b, c, candidates], iou)[:max_per_class]
                index = candidates[order]
                kept.append(torch.stack((torch.full_like(index, b), torch.full_like(index, c), index), 1))
        return torch.cat(kept)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou: float, conf: float):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op("NonMaxSuppression", boxes, scores, const(max_per_class, torch.int64), const(iou, torch.float32),
                    const(conf, torch.float32), center_point_box_i=0)


class WithNMS(nn.Module):
    """The model, its decoding and NMS in one graph: images -> (num_dets, boxes, scores, classes), batch first."""

    def __init__(self, model: nn.Module, spec: LevelSpec, nms: NMSSettings) -> None:
        super().__init__()
        self.model, self.spec, self.nms = model, spec, nms

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pred = decode_predictions(self.model(images), self.spec)  # [B, N, 5 + C]
        n, c = pred.shape[1], pred.shape[2] - 5
        boxes = pred[..., :4]
        best_prob, best = pred[..., 5:].max(-1)
        score = pred[..., 4] * best_prob  # [B, N]: objectness x the best class probability
        # one class per box: its score in its best class's row, 0 elsewhere (below any threshold)
        per_class = torch.where(nn.functional.one_hot(best, c).bool(), score[..., None], 0.0).transpose(1, 2)  # [B, C, N]
        kept = _NonMaxSuppression.apply(boxes, per_class.contiguous(), self.nms.max_det, self.nms.iou, self.nms.conf)
        flat = per_class.flatten(1)  # [B, C * N]: class c, box i at c * N + i
        chosen = torch.zeros_like(flat).index_put((kept[:, 0], kept[:, 1] * n + kept[:, 2]),
                                                   torch.ones_like(kept[:, 0], dtype=flat.dtype))
        top, where = torch.where(chosen > 0, flat, -1.0).topk(min(self.nms.max_det, c * n), dim=1)  # best first
        valid = top > 0
        out_boxes = boxes.gather(1, (where % n)[..., None].expand(-1, -1, 4)) * valid[..., None].to(boxes.dtype)
        out_classes = torch.where(valid, torch.div(where, n, rounding_mode="floor"), -1)
        return valid.long().sum(1, keepdim=True), out_boxes, top.clamp(min=0.0), out_classes


def model_metadata(card: ModelCard, model: nn.Module, nms: NMSSettings | None = None) -> dict[str, Any]:
    """What an exported graph needs to be used alone: the card, the anchor masks and strides its decoding
    needs, and for an ``--nms`` graph the settings fixed in it."""
    meta = {**card.to_dict(), "anchor_masks": [list(m) for m in model.anchor_masks], "strides": list(model.strides)}
    if nms is not None:
        meta["nms"] = dataclasses.asdict(nms)
    return meta


def export_model(weights: str | Path, fmt: str = "onnx", output: str | Path | None = None,
                 config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                 img_size: int | None = None, dynamic: bool = False, opset: int = 17, half: bool = False,
                 nms: NMSSettings | None = None, simplify: bool = False) -> tuple[Path, dict[str, Any]]:
    """Write ``weights`` (a .pt checkpoint, or Darknet .weights with ``config``) in the format ``fmt`` (onnx,
    openvino, torchscript); returns the written path (OpenVINO: the .xml) and facts about it (size, node counts
    before and after ``simplify``). ``half``: float16 weights (ONNX: input and outputs too)."""
    if fmt not in FORMATS:
        raise BackendError(f"format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if nms is not None and fmt != "onnx":
        raise BackendError("--nms is for ONNX graphs; OpenVINO and TorchScript models give the raw maps")
    backend = load_backend(weights, config, overrides, "cpu", fuse=True, channels_last=False)
    size = backend.check_size(img_size or backend.input_size)
    card = dataclasses.replace(ModelCard.of(backend.cfg, backend.class_names, backend.anchors), input_size=size)
    meta = model_metadata(card, backend.model, nms)
    stem = Path(weights).with_suffix("")
    facts: dict[str, Any] = {"format": fmt, "img_size": size}
    if fmt == "torchscript":
        path = Path(output) if output else stem.with_suffix(".torchscript")
        write_torchscript(backend.model, size, path, meta, half)
    elif fmt == "openvino":
        path = Path(output) if output else stem.parent / f"{stem.name}_openvino" / f"{stem.name}.xml"
        write_openvino(backend, size, path, meta, half, opset)
    else:
        path = Path(output) if output else stem.with_suffix(".onnx")
        facts.update(write_onnx_file(backend, size, path, meta, dynamic, opset, half, nms, simplify))
    facts["bytes"] = path.stat().st_size + (path.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)
    return path, facts


def write_onnx(model: nn.Module, x: torch.Tensor, path: str | Path, dynamic: bool = False, opset: int = 17,
               output_names: tuple[str, ...] | None = None) -> None:
    """The graph of ``model`` traced on ``x``: input ``images``, outputs ``out<stride>`` (or ``output_names``)."""
    out_names = list(output_names or [f"out{s}" for s in model.strides])
    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        axes.update({n: {0: "batch", 2: f"height{n[3:]}", 3: f"width{n[3:]}"} for n in out_names})
        if output_names:  # an NMS graph: its outputs are per box, only the batch is free
            axes = {"images": {0: "batch"}, **{n: {0: "batch"} for n in out_names}}
    with warnings.catch_warnings():
        # the TorchScript-based exporter (dynamo=False) needs no extra package; it warns that it is the old one,
        # and that the input-size check in YOLO.forward is fixed at trace time (it passes for any multiple of 32)
        warnings.simplefilter("ignore")
        # torch < 2.5 has only that exporter, and no ``dynamo`` argument
        legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=out_names,
                          opset_version=opset, dynamic_axes=axes, do_constant_folding=True, **legacy)


def write_onnx_file(backend: Backend, size: int, path: Path, meta: dict[str, Any], dynamic: bool, opset: int,
                    half: bool, nms: NMSSettings | None, simplify: bool) -> dict[str, Any]:
    """The ONNX file with its metadata, simplified where asked; its node counts."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    model, x = backend.model, torch.zeros(1, 3, size, size)
    if half:
        if nms is not None:
            raise BackendError("--half and --nms together are not supported: export the NMS graph in float32")
        model, x = model.half(), x.half()
    if nms is not None:
        write_onnx(WithNMS(model, backend.spec, nms).eval(), x, path, dynamic, opset, NMS_OUTPUTS)
    else:
        write_onnx(model, x, path, dynamic, opset)
    graph = onnx.load(str(path))
    facts = {"nodes": len(graph.graph.node)}
    if simplify:
        try:
            import onnxslim
        except ImportError:
            raise BackendError("--simplify needs onnxslim (pip install onnxslim)") from None
        graph = onnxslim.slim(graph)
        facts["nodes_simplified"] = len(graph.graph.node)
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return facts


def write_torchscript(model: nn.Module, size: int, path: Path, meta: dict[str, Any], half: bool) -> None:
    """The traced model (raw maps out), its card in the extra file ``yolov4.json``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 3, size, size)
    if half:
        model, x = model.half(), x.half()
    with warnings.catch_warnings(), torch.no_grad():
        # the input-size check in YOLO.forward is fixed at trace time; torch >= 2.9 also calls TorchScript deprecated
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x, strict=False)
        torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})


def write_openvino(backend: Backend, size: int, path: Path, meta: dict[str, Any], half: bool, opset: int) -> None:
    """OpenVINO IR (``.xml`` and ``.bin``) converted from the raw-map ONNX graph, weights in float16 with ``half``;
    its card in rt_info ``yolov4``."""
    try:
        import openvino as ov
    except ImportError:
        raise BackendError("OpenVINO export needs the openvino package (pip install openvino)") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:  # the intermediate graph never lands beside the user's files
        onnx_path = Path(tmp) / "model.onnx"
        write_onnx(backend.model, torch.zeros(1, 3, size, size), onnx_path, opset=opset)
        model = ov.convert_model(str(onnx_path))  # its weights may be read from that file until saved
        model.set_rt_info(json.dumps(meta), [METADATA_KEY])
        ov.save_model(model, str(path), compress_to_fp16=half)


def check_against_pytorch(weights: str | Path, exported: Path, config=None, overrides=(), batch: int = 1) -> float:
    """Largest absolute difference between PyTorch's raw maps and the exported graph's on random inputs (an
    ``--nms`` graph: between the two paths' detections, boxes and scores)."""
    torch_backend = load_backend(weights, config, overrides, "cpu", precision="fp32")
    other = load_backend(exported)
    size = other.input_size
    x = torch.rand(batch if other.fixed_batch is None else other.fixed_batch, 3, size, size,
                   generator=torch.Generator().manual_seed(0))
    if other.nms is not None:
        eval_cfg = dataclasses.replace(torch_backend.cfg.eval, conf_thres=other.nms["conf"], nms_iou=other.nms["iou"],
                                       max_det=other.nms["max_det"])
        a, b = torch_backend.detect(x, eval_cfg), other.detect(x, eval_cfg)
        if any(len(p) != len(q) for p, q in zip(a, b, strict=True)):
            return float("inf")
        return max([float((p[:, :5] - q[:, :5]).abs().max()) for p, q in zip(a, b, strict=True) if len(p)] or [0.0])
    return max(float(np.abs(p.float().numpy() - q.float().numpy()).max()) for p, q in zip(torch_backend(x), other(x),
                                                                                             strict=True))
