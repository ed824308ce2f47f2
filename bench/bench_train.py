"""Training-step benchmark: images/s of a whole step, the plain way against the way train.py does it.

    python -m bench.bench_train [--runs 3] [--json out.json]

A step is zero_grad, forward, loss (assignment included), backward and an SGD step, on a fixed
random batch with 10 boxes per image and 20 classes (the data pipeline is measured by
bench_data). Cases: yolov4 at 416, batch 4, and yolov4-tiny at 416, batch 16; each

- ``plain``: eager float32, NCHW, the loss with the classic per-box assignment (bench_loss's
  baseline), the optimizer's per-parameter loop (``foreach=False``);
- ``tuned``: the loss of nets/loss.py and the optimizer's multi-tensor step (``foreach=True``),
  in NCHW and in channels_last.

Timed in alternation (a slow spell of a shared machine hits every variant alike); the medians
are reported. ``achieved_gflops_per_s`` counts forward + backward as 3 x the forward FLOPs
(nets.yolo.model_summary), next to the rate of a large float32 matmul and of a large 3x3
convolution measured in the same run. ``loss_share`` is the loss's forward + backward on the
same maps over the step. ``peak_rss_mb``: the peak resident memory of a fresh process that runs
yolov4 training steps at batch 8, 416.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_loss import LoopAssignLoss, loss_step, make_inputs  # noqa: E402
from bench.bench_model import matmul_gflops_per_s  # noqa: E402
from bench.common import emit, median_ms, median_ms_interleaved  # noqa: E402
from nets.loss import YOLOLoss  # noqa: E402
from nets.yolo import build_model, model_summary  # noqa: E402
from utils.config import REPO_ROOT, read_anchors  # noqa: E402
from utils.engine import build_optimizer  # noqa: E402

CLASSES = 20
ANCHORS = {"yolov4": "yolo_anchors.txt", "yolov4-tiny": "yolo_tiny_anchors.txt"}


def conv_gflops_per_s(runs: int = 5) -> float:
    """Forward rate of a large 3x3 convolution (256 -> 256 channels, 52 x 52, batch 8), as in yolov4's neck."""
    x, w = torch.randn(8, 256, 52, 52), torch.randn(256, 256, 3, 3)
    with torch.inference_mode():
        ms = median_ms(lambda: F.conv2d(x, w, padding=1), runs)
    return 2 * 8 * 256 * 256 * 9 * 52 * 52 / (ms / 1e3) / 1e9


def make_step(name: str, size: int, batch: int, plain: bool, channels_last: bool = False):
    torch.manual_seed(0)
    model = build_model(name, CLASSES).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    anchors = read_anchors(REPO_ROOT / "model_data" / ANCHORS[name])
    loss_cls = LoopAssignLoss if plain else YOLOLoss
    loss_fn = loss_cls(CLASSES, anchors, model.strides, size, model.anchor_masks, focal_loss=True)
    opt = build_optimizer(model, "sgd", 0.001, 0.937, 5e-4)
    for group in opt.param_groups:
        group["foreach"] = not plain
    _, targets = make_inputs(batch, size, 10, CLASSES)
    x = torch.rand(batch, 3, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        total, _ = loss_fn(model(x), targets)
        total.backward()
        opt.step()

    return step, loss_fn, model, x, targets


def loss_ms(loss_fn, model, x, targets, runs: int) -> float:
    """The loss's forward + backward on this model's maps for ``x``, as bench_loss times it."""
    with torch.no_grad():
        maps = [m.detach() for m in model(x)]
    return median_ms(loss_step(loss_fn, maps, targets)[0], runs)


def bench_case(name: str, size: int, batch: int, runs: int) -> dict:
    gflops = model_summary(build_model(name, CLASSES), size)["gflops"] * batch * 3  # forward + backward per step
    variants = {"plain": make_step(name, size, batch, plain=True),
                "tuned": make_step(name, size, batch, plain=False),
                "tuned_channels_last": make_step(name, size, batch, plain=False, channels_last=True)}
    ms = median_ms_interleaved({k: v[0] for k, v in variants.items()}, dict.fromkeys(variants, runs), warmup=1)
    out = {"model": name, "input_size": size, "batch": batch, "gflop_per_step": round(gflops, 1)}
    for k, v in ms.items():
        out[k] = {"step_ms": round(v, 1), "images_per_s": round(batch / (v / 1e3), 3),
                  "achieved_gflops_per_s": round(gflops / (v / 1e3), 1)}
    best = min(("tuned", "tuned_channels_last"), key=lambda k: ms[k])
    out["best"] = best
    out["speedup_over_plain"] = round(ms["plain"] / ms[best], 3)
    _, loss_fn, model, x, targets = variants[best]
    out["loss_ms"] = round(loss_ms(loss_fn, model, x, targets, max(runs, 5)), 2)
    out["loss_share"] = round(out["loss_ms"] / ms[best], 4)
    _, loop_fn, model_p, x_p, targets_p = variants["plain"]
    out["plain_loss_ms"] = round(loss_ms(loop_fn, model_p, x_p, targets_p, max(runs, 3)), 2)
    return out


def peak_rss_child(size: int, batch: int, steps: int) -> None:
    step = make_step("yolov4", size, batch, plain=False)[0]
    for _ in range(steps):
        step()
    print(json.dumps({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def peak_rss_mb(size: int = 416, batch: int = 8, steps: int = 2) -> float:
    code = f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); from bench.bench_train import peak_rss_child; " \
           f"peak_rss_child({size}, {batch}, {steps})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed steps per variant (median)")
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--cases", nargs="+", default=["yolov4:4", "yolov4-tiny:16"], help="model:batch")
    parser.add_argument("--rss", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the peak RSS of yolov4 steps at batch 8 in a fresh process")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    result: dict = {"bench": "train", "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "matmul_gflops_per_s": round(matmul_gflops_per_s(2048), 1),
                    "conv_gflops_per_s": round(conv_gflops_per_s(), 1), "cases": []}
    for case in args.cases:
        name, batch = case.split(":")
        c = bench_case(name, args.size, int(batch), args.runs)
        best = c[c["best"]]["achieved_gflops_per_s"]
        c["fraction_of_matmul_rate"] = round(best / result["matmul_gflops_per_s"], 3)
        c["fraction_of_conv_rate"] = round(best / result["conv_gflops_per_s"], 3)
        result["cases"].append(c)
    if args.rss:
        result["peak_rss_mb_yolov4_b8_416"] = peak_rss_mb(args.size, 8)
    if torch.cuda.is_available():
        result["cuda"] = "not measured by this script on CUDA; see the README"
    return emit(result, args.json)


if __name__ == "__main__":
    main()
