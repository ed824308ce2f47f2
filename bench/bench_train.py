"""Training-step benchmark: images/s of a whole step, the plain way against the way train.py does it.

    python -m bench.bench_train [--runs 3] [--json out.json]

A step is zero_grad, forward, loss (assignment included), backward and an SGD step, on a fixed
random batch with 10 boxes per image and 20 classes (the data pipeline is measured by
bench_data). Cases: yolov4 at 416, batch 4, and yolov4-tiny at 416, batch 16 (``--cases`` also takes
yolov4-tiny-3l, the demo's model; ``--size 256`` is the demo's size); each

- ``plain``: eager float32, NCHW, the loss with the classic per-box assignment (bench_loss's
  baseline), the optimizer's per-parameter loop (``foreach=False``);
- ``tuned``: the loss of nets/loss.py and the optimizer's multi-tensor step (``foreach=True``),
  in NCHW and in channels_last; and, on a CPU with bfloat16 instructions (AVX512-BF16, AMX),
  channels_last under bf16 autocast (``train.amp=bf16``);
- ``convs_only`` (a ceiling, not a way to train): the channels_last float32 step with every
  BatchNorm and activation replaced by the identity (convolutions re-initialized to keep the
  activations' scale), so the same convolutions and nothing else between them. Its rate over the
  convolution's bounds what any step of this network can reach with BN and activations costing
  nothing.

Timed in alternation (a slow spell of a shared machine hits every variant alike); the medians
are reported. ``achieved_gflops_per_s`` counts forward + backward as 3 x the forward FLOPs
(nets.yolo.model_summary), next to the rate of a large float32 matmul and of a large 3x3
convolution measured in the same run: the convolution's forward alone, and its forward +
backward counted the same way as the step (3 x forward), each in its faster layout, in float32
and in bfloat16. A step is compared with the convolution of its own precision, forward +
backward, timed again in alternation with the steps (``conv_forward_backward_gflops_per_s``).
``loss_share`` is the loss's forward + backward on the same maps over the step. ``peak_rss_mb``:
the peak resident memory of a fresh process that runs yolov4 training steps at batch 8, 416.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_loss import LoopAssigner, loss_step, make_inputs  # noqa: E402
from bench.bench_model import matmul_gflops_per_s  # noqa: E402
from bench.common import emit, median_ms, median_ms_interleaved  # noqa: E402
from nets.assign import TargetAssigner  # noqa: E402
from nets.common import ConvBNAct  # noqa: E402
from nets.loss import YOLOLoss  # noqa: E402
from nets.yolo import build_model, model_summary  # noqa: E402
from utils.config.files import REPO_ROOT, read_anchors  # noqa: E402
from utils.runtime import cpu_has_native_bf16  # noqa: E402
from utils.train.optim import build_optimizer  # noqa: E402

CLASSES = 20
ANCHORS = {"yolov4": "yolo_anchors.txt", "yolov4-tiny": "yolo_tiny_anchors.txt",
           "yolov4-tiny-3l": "shapes_anchors_tiny3l_256.txt"}  # the demo's model (configs/shapes.yaml)
CONV_FLOP = 2 * 8 * 256 * 256 * 9 * 52 * 52  # the reference convolution's forward


def conv_reference(dtype: torch.dtype = torch.float32, backward: bool = False,
                   runs: int = 5) -> tuple[float, Callable[[], None]]:
    """Rate (GFLOP/s) of a large 3x3 convolution (256 -> 256 channels, 52 x 52, batch 8, as in yolov4's neck)
    in the faster of NCHW and channels_last: the forward alone, or forward + backward counted as 3 x forward;
    and the call in that layout, to time again beside the steps."""
    best: tuple[float, Callable[[], None]] = (0.0, lambda: None)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(8, 256, 52, 52).contiguous(memory_format=layout).requires_grad_(backward)
        w = torch.randn(256, 256, 3, 3).contiguous(memory_format=layout).requires_grad_(backward)
        call = partial(_conv_call, x, w, dtype, backward)
        rate = (3 if backward else 1) * CONV_FLOP / (median_ms(call, runs) / 1e3) / 1e9
        best = max(best, (rate, call), key=lambda r: r[0])
    return best


def _conv_call(x: torch.Tensor, w: torch.Tensor, dtype: torch.dtype, backward: bool) -> None:
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32), torch.set_grad_enabled(backward):
        y = F.conv2d(x, w, padding=1)
    if backward:
        x.grad = w.grad = None
        y.backward(torch.ones_like(y))


def convs_only(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every BatchNorm and activation of its ConvBNAct blocks replaced by the identity, and
    the convolutions re-initialized for unit gain (so that activations neither explode nor turn denormal)."""
    for block in model.modules():
        if isinstance(block, ConvBNAct):
            block.bn, block.act = torch.nn.Identity(), torch.nn.Identity()
            torch.nn.init.kaiming_normal_(block.conv.weight, nonlinearity="linear")
    return model


def make_step(name: str, size: int, batch: int, plain: bool, channels_last: bool = False,
              amp: torch.dtype | None = None, strip: bool = False):
    torch.manual_seed(0)
    model = build_model(name, CLASSES).train()
    if strip:
        convs_only(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    anchors = read_anchors(REPO_ROOT / "model_data" / ANCHORS[name])
    loss_fn = YOLOLoss.build(CLASSES, anchors, model.strides, size, model.anchor_masks, focal_loss=True,
                             assigner_cls=LoopAssigner if plain else TargetAssigner)
    opt = build_optimizer(model, "sgd", 0.001, 0.937, 5e-4)
    for group in opt.param_groups:
        group["foreach"] = not plain
    _, targets = make_inputs(batch, size, 10, CLASSES)
    x = torch.rand(batch, 3, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):  # as utils/train/engine.py
            outputs = model(x)
        total, _ = loss_fn(outputs, targets)
        total.backward()
        opt.step()

    return step, loss_fn, model, x, targets


def loss_ms(loss_fn, model, x, targets, runs: int) -> float:
    """The loss's forward + backward on this model's maps for ``x``, as bench_loss times it."""
    with torch.no_grad():
        maps = [m.detach() for m in model(x)]
    return median_ms(loss_step(loss_fn, maps, targets)[0], runs)


def bench_case(name: str, size: int, batch: int, runs: int, bf16: bool, conv: dict[str, dict] | None = None) -> dict:
    """``conv``: per precision, the reference convolution's forward rate and its forward + backward call
    (from conv_reference); the call is timed again in alternation with the steps (3 x ``runs``), and each
    step's rate is given as a fraction of the rate of its precision's convolution measured beside it."""
    gflops = model_summary(build_model(name, CLASSES), size)["gflops"] * batch * 3  # forward + backward per step
    variants = {"plain": make_step(name, size, batch, plain=True),
                "tuned": make_step(name, size, batch, plain=False),
                "tuned_channels_last": make_step(name, size, batch, plain=False, channels_last=True)}
    if bf16:
        variants["tuned_channels_last_bf16"] = make_step(name, size, batch, plain=False, channels_last=True,
                                                         amp=torch.bfloat16)
    variants["convs_only"] = make_step(name, size, batch, plain=False, channels_last=True, strip=True)
    conv = conv or {}
    calls = {k: v[0] for k, v in variants.items()} | {f"conv_{p}": r["forward_backward_call"] for p, r in conv.items()}
    ms = median_ms_interleaved(calls, {k: runs if k in variants else 3 * runs for k in calls}, warmup=1)
    conv_rates = {p: 3 * CONV_FLOP / (ms.pop(f"conv_{p}") / 1e3) / 1e9 for p in conv}
    out = {"model": name, "input_size": size, "batch": batch, "gflop_per_step": round(gflops, 1),
           "conv_forward_backward_gflops_per_s": {p: round(v, 1) for p, v in conv_rates.items()}}
    for k, v in ms.items():
        out[k] = {"step_ms": round(v, 1), "images_per_s": round(batch / (v / 1e3), 3),
                  "achieved_gflops_per_s": round(gflops / (v / 1e3), 1)}
    best_fp32 = min(("tuned", "tuned_channels_last"), key=lambda k: ms[k])
    best = min((k for k in ms if k not in ("plain", "convs_only")), key=lambda k: ms[k])
    out["best_fp32"], out["best"] = best_fp32, best
    out["speedup_fp32_over_plain"] = round(ms["plain"] / ms[best_fp32], 3)
    out["speedup_over_plain"] = round(ms["plain"] / ms[best], 3)
    if bf16:
        out["speedup_bf16_over_plain"] = round(ms["plain"] / ms["tuned_channels_last_bf16"], 3)
    steps = (("fp32", best_fp32), ("bf16", "tuned_channels_last_bf16"), ("fp32_convs_only", "convs_only"))
    for precision, variant in steps:
        base = precision.split("_")[0]
        if base in conv and variant in ms:  # the step's rate over the convolution's, both in this precision
            rate = gflops / (ms[variant] / 1e3)
            out[f"fraction_of_conv_rate_{precision}"] = {"forward": round(rate / conv[base]["forward"], 3),
                                                         "forward_backward": round(rate / conv_rates[base], 3)}
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
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="also time the step under bf16 autocast (default: when the CPU has bfloat16 instructions)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    bf16 = args.bf16 if args.bf16 is not None else cpu_has_native_bf16()
    conv = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))[: 2 if bf16 else 1]:
        forward, _ = conv_reference(dtype)
        forward_backward, call = conv_reference(dtype, backward=True)
        conv[precision] = {"forward": forward, "forward_backward": forward_backward, "forward_backward_call": call}
    result: dict = {"bench": "train", "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "matmul_gflops_per_s": round(matmul_gflops_per_s(2048), 1),
                    "conv_gflops_per_s": {p: {k: round(r[k], 1) for k in ("forward", "forward_backward")}
                                          for p, r in conv.items()},
                    "cases": []}
    for case in args.cases:
        name, batch = case.split(":")
        c = bench_case(name, args.size, int(batch), args.runs, bf16, conv)
        c["fraction_of_matmul_rate"] = round(c[c["best_fp32"]]["achieved_gflops_per_s"] / result["matmul_gflops_per_s"], 3)
        result["cases"].append(c)
    if args.rss:
        result["peak_rss_mb_yolov4_b8_416"] = peak_rss_mb(args.size, 8)
    if torch.cuda.is_available():
        result["cuda"] = "not measured by this script on CUDA; see the README"
    return emit(result, args.json)


if __name__ == "__main__":
    main()
