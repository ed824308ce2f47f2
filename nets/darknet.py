"""Read and write Darknet ``.weights`` files (yolov4.weights, yolov4.conv.137, yolov4-tiny.weights, ...).

Format (AlexeyAB/darknet, ``load_weights`` / ``save_weights`` in src/parser.c):

- header: int32 major, minor, revision, then ``seen`` (images trained on) as uint64 when
  ``major * 10 + minor >= 2``, else uint32; yolov4.weights has 0.2.5, so 20 bytes;
- then, for each ``[convolutional]`` layer in cfg order, float32 arrays: the biases (the BN
  shift beta where the layer is batch-normalized), then for BN layers the scales, rolling
  means and rolling variances, then the weights in (out, in, kh, kw) order.

The cfg order of the convolutions is taken from the model itself by :func:`conv_order`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nets.common import ConvBNAct

LOGGER = logging.getLogger(__name__)
HEADER_VERSION = (0, 2, 5)  # what yolov4.weights carries


class DarknetWeightsError(ValueError):
    """A .weights file that does not fit the model."""


@dataclass(frozen=True)
class PublishedWeights:
    """A Darknet file published with AlexeyAB/darknet, that a model starts from."""

    model: str  # the model it belongs to
    conv_layers: int  # the [convolutional] layers it holds, from the first
    size: int  # its size in bytes: the 20-byte header and those layers' floats (darknet_bytes; a test checks it)
    where: str


# yolov4.conv.137: the first 137 layers of yolov4.cfg, which hold 92 convolutions (CSPDarknet53, SPP and the
# PANet's top-down path up to its stride-8 output); tests/test_darknet.py computes the size from the model
PUBLISHED = {"yolov4.conv.137": PublishedWeights(
    "yolov4", 92, 170_038_676, "AlexeyAB/darknet's release page: "
    "https://github.com/AlexeyAB/darknet/releases/download/darknet_yolo_v3_optimal/yolov4.conv.137")}


def darknet_bytes(model: nn.Module, conv_layers: int | None = None) -> int:
    """The size of a .weights file holding the model's first ``conv_layers`` convolutions (all by default)."""
    layers = conv_order(model)[:conv_layers]
    return 20 + 4 * sum(layer.numel() for layer in layers)


@dataclass
class DarknetLayer:
    """One ``[convolutional]`` layer: its conv, its BN (None for the linear output convs) and its name."""

    name: str
    conv: nn.Conv2d
    bn: nn.BatchNorm2d | None
    is_head: bool = False

    def arrays(self) -> list[torch.Tensor]:
        """The tensors in file order (biases/beta, [scales, means, variances], weights)."""
        if self.bn is None:
            return [self.conv.bias, self.conv.weight]
        return [self.bn.bias, self.bn.weight, self.bn.running_mean, self.bn.running_var, self.conv.weight]

    def numel(self, out_channels: int | None = None) -> int:
        """Floats of this layer in a file; ``out_channels`` for a head made for another class count."""
        c_out = self.conv.out_channels if out_channels is None else out_channels
        per_out = self.conv.weight[0].numel()  # in * kh * kw
        return c_out * (per_out + (4 if self.bn is not None else 1))


@dataclass
class DarknetLoadReport:
    path: str
    version: tuple[int, int, int]
    seen: int
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # output convs of another class count
    missing: list[str] = field(default_factory=list)  # not in the file (backbone-only files)
    file_classes: int | None = None


@torch.no_grad()
def conv_order(model: nn.Module) -> list[DarknetLayer]:
    """The model's convolutions in the order of Darknet's cfg.

    Darknet runs its layers in cfg order, and our modules run their convolutions in that
    order too, except that Darknet runs each YOLO output conv as soon as its input exists
    while our head runs after the whole neck. So a forward pass on a small input is traced:
    every Conv-BN-activation block in run order, and each output conv placed right after the
    block whose output it reads. Nothing here is a hand-kept list.
    """
    blocks = {m: name for name, m in model.named_modules() if isinstance(m, ConvBNAct)}
    heads = {m: f"head.convs.{i}" for i, m in enumerate(model.head.convs)}
    if any(isinstance(b.bn, nn.Identity) for b in blocks):
        raise DarknetWeightsError("the model is fused (BN folded into convs); use an unfused model for .weights")
    ran: list[ConvBNAct] = []
    producer: dict[int, ConvBNAct] = {}
    outputs: list[torch.Tensor] = []  # keeps outputs alive so that their ids stay unique
    reads: dict[nn.Conv2d, ConvBNAct] = {}

    def after_block(module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        ran.append(module)
        producer[id(out)] = module
        outputs.append(out)

    def before_head(module: nn.Module, inp: tuple) -> None:
        if id(inp[0]) not in producer:
            raise RuntimeError(f"{heads[module]} reads a tensor that no conv block produced")
        reads[module] = producer[id(inp[0])]

    hooks = [b.register_forward_hook(after_block) for b in blocks]
    hooks += [h.register_forward_pre_hook(before_head) for h in heads]
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros(1, 3, 64, 64, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if len(set(ran)) != len(ran) or len(ran) != len(blocks):
        raise RuntimeError("every conv block must run exactly once per forward")
    layers = []
    for block in ran:
        layers.append(DarknetLayer(blocks[block], block.conv, block.bn))
        layers += [DarknetLayer(heads[h], h, None, is_head=True) for h in heads if reads[h] is block]
    return layers


def _read_header(fh) -> tuple[tuple[int, int, int], int]:
    raw = np.fromfile(fh, dtype=np.int32, count=3)
    if raw.size != 3:
        raise DarknetWeightsError("file too short for a Darknet header")
    major, minor, revision = (int(v) for v in raw)
    wide = major * 10 + minor >= 2
    seen = np.fromfile(fh, dtype=np.uint64 if wide else np.uint32, count=1)
    if seen.size != 1:
        raise DarknetWeightsError("file too short for a Darknet header")
    return (major, minor, revision), int(seen[0])


def looks_like_darknet(path: str | Path) -> bool:
    """A plausible header (small version numbers) and a whole number of float32 after it."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        try:
            (major, minor, _), _ = _read_header(fh)
        except DarknetWeightsError:
            return False
        header = fh.tell()
    return 0 <= major < 100 and 0 <= minor < 100 and size > header and (size - header) % 4 == 0


@torch.no_grad()
def load_darknet(model: nn.Module, path: str | Path) -> DarknetLoadReport:
    """Load a Darknet ``.weights`` file into ``model`` (a :class:`nets.yolo.YOLO`).

    Accepted: a full file for the model; a full file made for another class count (all
    but the output convs are loaded, which keep their initialisation and are reported);
    a file that stops at a layer boundary such as ``yolov4.conv.137`` (the layers it
    holds are loaded, the rest keep their initialisation). Anything else is an error
    that says how many floats were expected and found.
    """
    path = Path(path)
    known = PUBLISHED.get(path.name)
    if known is not None and path.stat().st_size != known.size:
        raise DarknetWeightsError(f"{path}: {path.stat().st_size:,} bytes, but {path.name} has {known.size:,} "
                                  f"(a download cut short?); it is published on {known.where}")
    with open(path, "rb") as fh:
        version, seen = _read_header(fh)
        header_bytes = fh.tell()
        data = np.fromfile(fh, dtype=np.float32)
    layers = conv_order(model)
    found = data.size
    expected = sum(layer.numel() for layer in layers)
    report = DarknetLoadReport(str(path), version, seen)

    out_channels = {id(layer): layer.conv.out_channels for layer in layers}
    if found != expected:
        heads = [layer for layer in layers if layer.is_head]
        per_class = sum(layer.numel(1) - layer.numel(0) for layer in heads)  # floats per extra output channel
        rest = found - sum(layer.numel() for layer in layers if not layer.is_head)
        anchors = model.head.num_anchors
        if rest > 0 and rest % per_class == 0 and (rest // per_class) % anchors == 0 and rest // per_class // anchors > 5:
            report.file_classes = rest // per_class // anchors - 5
            for layer in heads:
                out_channels[id(layer)] = anchors * (5 + report.file_classes)
        else:
            bounds = np.cumsum([layer.numel() for layer in layers])
            if found not in set(bounds.tolist()):
                raise DarknetWeightsError(
                    f"{path}: expected {expected:,} floats after the {header_bytes}-byte "
                    f"header for {getattr(model, 'name', 'the model')} with {model.head.num_classes} classes "
                    f"(or a file ending at a layer boundary, or a full file for another class count), found {found:,}")

    offset = 0
    for layer in layers:
        c_out = out_channels[id(layer)]
        if offset >= found:
            report.missing.append(layer.name)
        elif c_out != layer.conv.out_channels:
            report.skipped.append(layer.name)
            offset += layer.numel(c_out)
        else:
            for t in layer.arrays():
                t.copy_(torch.from_numpy(data[offset: offset + t.numel()]).view_as(t))
                offset += t.numel()
            report.loaded.append(layer.name)
    assert offset == found, (offset, found)
    total = len(layers)
    LOGGER.info("%s: loaded %d of %d conv layers (Darknet %d.%d.%d, seen %d)", path, len(report.loaded), total,
                *version, seen)
    if report.skipped:
        LOGGER.warning("%s: made for %d classes, the model has %d: output convs left at their initialisation: %s",
                       path, report.file_classes, model.head.num_classes, ", ".join(report.skipped))
    if report.missing:
        LOGGER.info("%s: ends after conv layer %d; %d layers keep their initialisation (first: %s)",
                    path, len(report.loaded), len(report.missing), report.missing[0])
    return report


@torch.no_grad()
def save_darknet(model: nn.Module, path: str | Path, seen: int = 0) -> Path:
    """Write ``model`` as a Darknet ``.weights`` file (version 0.2.5) that Darknet itself reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        np.array(HEADER_VERSION, dtype=np.int32).tofile(fh)
        np.array([seen], dtype=np.uint64).tofile(fh)
        for layer in conv_order(model):
            for t in layer.arrays():
                t.detach().to("cpu", torch.float32).contiguous().numpy().tofile(fh)
    return path
