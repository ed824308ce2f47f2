"""Model benchmark: parameters, GFLOPs, CPU forward latency at batch 1, and the machine's matmul rate.

    python -m bench.bench_model [--size 416] [--runs 10] [--json out.json]

Prints one JSON object. Latency is the median of ``--runs`` timed forwards after warm-up,
under ``torch.inference_mode``, for the model as built (eval mode), fused (BN folded into
the convs) and fused in channels_last. ``achieved_gflops_per_s`` is the model's GFLOPs
(Darknet's convention, see nets.yolo.model_summary) divided by the median latency, next
to the best rate of large float32 matmuls (1024, 2048 and 4096 square) measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, median_ms  # noqa: E402
from nets.yolo import build_model, model_summary  # noqa: E402


def matmul_gflops_per_s(n: int = 4096, runs: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    with torch.inference_mode():
        ms = median_ms(lambda: a @ b, runs)
    return 2 * n**3 / (ms / 1e3) / 1e9


def bench_model(name: str, size: int, runs: int, num_classes: int = 80) -> dict:
    model = build_model(name, num_classes).eval()
    summary = model_summary(model, size)
    x = torch.rand(1, 3, size, size)
    result = {"model": name, "input_size": size, "num_classes": num_classes, "params": summary["params"],
              "gflops": round(summary["gflops"], 3)}
    with torch.inference_mode():
        result["forward_ms_median"] = round(median_ms(lambda: model(x), runs), 2)
        model.fuse()
        result["fused_forward_ms_median"] = round(median_ms(lambda: model(x), runs), 2)
        model.to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        result["fused_channels_last_forward_ms_median"] = round(median_ms(lambda: model(xc), runs), 2)
    best = min(result["forward_ms_median"], result["fused_forward_ms_median"],
               result["fused_channels_last_forward_ms_median"])
    result["achieved_gflops_per_s"] = round(summary["gflops"] / (best / 1e3), 1)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=416, help="input side, pixels")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per measurement (median reported)")
    parser.add_argument("--models", nargs="+", default=["yolov4", "yolov4-tiny"])
    parser.add_argument("--json", metavar="PATH", help="also write the result to this file")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    result = {
        "bench": "model",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "matmul_gflops_per_s": {str(n): round(matmul_gflops_per_s(n), 1) for n in (1024, 2048, 4096)},
        "models": [bench_model(name, args.size, args.runs) for name in args.models],
    }
    peak = max(result["matmul_gflops_per_s"].values())  # the best square float32 matmul rate of this run
    for m in result["models"]:
        m["fraction_of_matmul_rate"] = round(m["achieved_gflops_per_s"] / peak, 3)
    return emit(result, args.json)


if __name__ == "__main__":
    main()
