"""Export a checkpoint to ONNX.

    python export.py --weights runs/shapes/exp/best.pt                       # -> runs/shapes/exp/best.onnx
    python export.py --weights best.pt --dynamic --opset 17 --output model.onnx
    python export.py --weights yolov4.weights --config voc.yaml              # Darknet weights need a config

The graph takes ``images`` (float32 RGB in [0, 1], ``[batch, 3, size, size]``, letterboxed as
predict.py does) and returns the raw maps ``out8``, ``out16``, ``out32`` (one per stride,
``[batch, A * (5 + C), size / stride, size / stride]``); decoding and NMS stay outside the graph,
in the same code that serves PyTorch. ``--dynamic`` leaves batch, height and width free (else
they are fixed at 1 and the model's input size); ``--half`` stores float16 weights, input and outputs
(half the file; meant for GPU runtimes). The class names, anchors,
model name, input size and config travel in the graph's metadata, so predict.py and eval.py take
the ``.onnx`` file alone. The export is checked: ONNX Runtime's outputs against PyTorch's.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from nets.weights import WeightsError
from utils.config.load import add_config_args
from utils.config.schema import ConfigError
from utils.console import one_line_errors
from utils.infer.backend import ONNX_METADATA_KEY, BackendError, load_backend, model_metadata
from utils.train.checkpoint import ModelCard


def write_onnx(model: torch.nn.Module, x: torch.Tensor, path: str | Path, dynamic: bool = False, opset: int = 17) -> None:
    """The bare graph of ``model`` traced on ``x``: input ``images``, outputs ``out<stride>``."""
    out_names = [f"out{s}" for s in model.strides]
    axes = None
    if dynamic:
        axes = {"images": {0: "batch", 2: "height", 3: "width"}}
        axes.update({n: {0: "batch", 2: f"height{n[3:]}", 3: f"width{n[3:]}"} for n in out_names})
    with warnings.catch_warnings():
        # the TorchScript-based exporter (dynamo=False) needs no extra package; it warns that it is the old one,
        # and that the input-size check in YOLO.forward is fixed at trace time (it passes for any multiple of 32)
        warnings.simplefilter("ignore")
        # torch < 2.5 has only that exporter, and no ``dynamo`` argument
        legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=out_names,
                          opset_version=opset, dynamic_axes=axes, do_constant_folding=True, **legacy)


def export_onnx(weights: str | Path, output: str | Path | None = None, config: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = (), img_size: int | None = None, dynamic: bool = False,
                opset: int = 17, half: bool = False) -> Path:
    """Write the ONNX graph (with its metadata) and return its path."""
    import onnx

    backend = load_backend(weights, config, overrides, "cpu", fuse=True, channels_last=False)
    model = backend.model
    size = backend.check_size(img_size or backend.input_size)
    output = Path(output) if output else Path(weights).with_suffix(".onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 3, size, size)
    if half:
        model, x = model.half(), x.half()
    write_onnx(model, x, output, dynamic, opset)
    graph = onnx.load(str(output))
    card = dataclasses.replace(ModelCard.of(backend.cfg, backend.class_names, backend.anchors), input_size=size)
    meta = model_metadata(card, model)
    entry = graph.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(meta)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(output))
    return output


def check_against_pytorch(weights: str | Path, onnx_path: Path, config=None, overrides=(), batch: int = 1) -> float:
    """Largest absolute difference between the raw maps of PyTorch and ONNX Runtime on random inputs."""
    torch_backend = load_backend(weights, config, overrides, "cpu")
    onnx_backend = load_backend(onnx_path)
    size = onnx_backend.input_size
    x = torch.rand(batch if onnx_backend.fixed_batch is None else onnx_backend.fixed_batch, 3, size, size,
                   generator=torch.Generator().manual_seed(0))
    a = torch_backend(x)
    b = onnx_backend(x)
    return max(float(np.abs(p.float().numpy() - q.numpy()).max()) for p, q in zip(a, b, strict=True))


@one_line_errors(ConfigError, WeightsError, BackendError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help=".pt checkpoint, or Darknet .weights with --config")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    add_config_args(parser)
    parser.add_argument("--output", help="output path (default: the weights' path with .onnx)")
    parser.add_argument("--img-size", type=int, help="input size, a multiple of 32 (default: the model's)")
    parser.add_argument("--dynamic", action="store_true", help="free batch, height and width")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.add_argument("--half", action="store_true", help="float16 weights and input (for GPU runtimes)")
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise SystemExit("error: export needs the onnx package (pip install onnx onnxruntime)") from None
    path = export_onnx(args.weights, args.output, args.config, args.overrides, args.img_size, args.dynamic,
                       args.opset, args.half)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opset {args.opset}"
          f"{', dynamic batch and size' if args.dynamic else ''}{', float16' if args.half else ''})")
    if importlib.util.find_spec("onnxruntime") is None:
        print("note: onnxruntime is not installed; the graph was not run")
    else:
        diff = check_against_pytorch(args.weights, path, args.config, args.overrides)
        print(f"checked: ONNX Runtime vs PyTorch raw outputs on a random input, max abs difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
