"""Inference benchmark on the CPU: PyTorch (as built, fused, fused in channels_last, frozen TorchScript,
and fused in channels_last in bfloat16) and ONNX Runtime side by side.

    python -m bench.bench_infer [--size 416] [--runs 10] [--batch 8] [--json out.json]

For yolov4 and yolov4-tiny (80 classes): the median latency of a batch-1 forward and the
images/s of a batch of ``--batch``, raw maps only (decode and NMS are the same code for every
backend). Variants are timed in alternation. ``frozen`` is ``torch.jit.freeze`` +
``torch.jit.optimize_for_inference`` on the traced fused model (oneDNN weight prepacking);
``onnxruntime`` runs export.py's graph with the CPU provider and default session options.
``fused_channels_last_bf16`` is predict.py's ``--precision bf16`` (weights and activations in
bfloat16), timed when the CPU has bfloat16 instructions (AVX512-BF16, AMX) or with ``--bf16``;
its largest difference from the float32 maps is reported relative to their largest magnitude.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, median_ms_interleaved  # noqa: E402
from nets.yolo import build_model  # noqa: E402
from utils.infer.export import write_onnx  # noqa: E402
from utils.runtime import cpu_has_native_bf16  # noqa: E402


def variants(name: str, size: int, batch: int, tmp: Path, bf16: bool) -> dict[str, tuple]:
    """name -> (batch-1 callable, batched callable)."""
    torch.manual_seed(0)
    x1, xb = torch.rand(1, 3, size, size), torch.rand(batch, 3, size, size)
    plain = build_model(name, 80).eval()
    fused = build_model(name, 80).eval().fuse()
    fused_cl = build_model(name, 80).eval().fuse().to(memory_format=torch.channels_last)
    x1c, xbc = (x.contiguous(memory_format=torch.channels_last) for x in (x1, xb))
    out: dict[str, tuple] = {
        "plain": (lambda: plain(x1), lambda: plain(xb)),
        "fused": (lambda: fused(x1), lambda: fused(xb)),
        "fused_channels_last": (lambda: fused_cl(x1c), lambda: fused_cl(xbc)),
    }
    if bf16:
        half = build_model(name, 80).eval().fuse().to(torch.bfloat16, memory_format=torch.channels_last)
        h1, hb = (x.to(torch.bfloat16) for x in (x1c, xbc))
        out["fused_channels_last_bf16"] = (lambda: half(h1), lambda: half(hb))
        pairs = zip(fused(x1), half(h1), strict=True)
        out["_bf16_rel_diff"] = max(float((r - o.float()).abs().max() / r.abs().max()) for r, o in pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(fused, x1)))
        out["frozen"] = (lambda: frozen(x1), lambda: frozen(xb))
        try:
            import onnxruntime as ort

            path = tmp / f"{name}.onnx"
            write_onnx(fused, x1, path, dynamic=True)
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            a1, ab = x1.numpy(), xb.numpy()
            out["onnxruntime"] = (lambda: sess.run(None, {"images": a1}), lambda: sess.run(None, {"images": ab}))
            ref = [o.numpy() for o in fused(x1)]
            diff = max(float(np.abs(r - o).max()) for r, o in zip(ref, sess.run(None, {"images": a1}), strict=True))
            out["_onnx_max_abs_diff"] = diff
        except ImportError:
            pass
    return out


def bench(name: str, size: int, batch: int, runs: int, bf16: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        v = variants(name, size, batch, Path(tmp), bf16)
        diff = v.pop("_onnx_max_abs_diff", None)
        bf16_diff = v.pop("_bf16_rel_diff", None)
        one = median_ms_interleaved({k: f[0] for k, f in v.items()}, dict.fromkeys(v, runs))
        many = median_ms_interleaved({k: f[1] for k, f in v.items()}, dict.fromkeys(v, max(2, runs // 3)), warmup=1)
    res = {"model": name, "input_size": size, "batch": batch,
           "batch1_ms": {k: round(t, 2) for k, t in one.items()},
           "batched_images_per_s": {k: round(batch / (t / 1e3), 2) for k, t in many.items()}}
    torch_best = min(("fused", "fused_channels_last", "frozen"), key=lambda k: one[k])
    res["best_pytorch"] = torch_best
    res["speedup_best_pytorch_over_plain"] = round(one["plain"] / one[torch_best], 3)
    if "fused_channels_last_bf16" in one:
        res["speedup_bf16_over_plain"] = round(one["plain"] / one["fused_channels_last_bf16"], 3)
        res["bf16_max_rel_diff"] = round(bf16_diff, 4)
    if "onnxruntime" in one:
        res["speedup_onnxruntime_over_plain"] = round(one["plain"] / one["onnxruntime"], 3)
        res["onnx_max_abs_diff"] = diff
    return res


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--runs", type=int, default=10, help="timed batch-1 forwards per variant (median)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["yolov4", "yolov4-tiny"])
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="also time bfloat16 (default: when the CPU has bfloat16 instructions)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    bf16 = args.bf16 if args.bf16 is not None else cpu_has_native_bf16()
    result = {"bench": "infer", "threads": torch.get_num_threads(), "torch": torch.__version__,
              "models": [bench(m, args.size, args.batch, args.runs, bf16) for m in args.models]}
    return emit(result, args.json)


if __name__ == "__main__":
    main()
