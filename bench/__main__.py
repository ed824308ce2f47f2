"""Run every benchmark and write ``bench/results.json`` and ``bench/results.md``.

    python -m bench [--only train infer ...] [--quick]

Each bench script also runs alone (``python -m bench.bench_train`` ...) and prints its own JSON.
The summary table holds the headline numbers and the performance targets as ratios measured
in the same run. ``--quick`` takes fewer timed runs (noisier; for a first look).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_data, bench_eval, bench_infer, bench_loss, bench_model, bench_train  # noqa: E402
from bench.common import cpu_name  # noqa: E402

HERE = Path(__file__).resolve().parent
BENCHES = {
    "model": (bench_model.main, ["--runs", "10"], ["--runs", "3"]),
    "loss": (bench_loss.main, ["--runs", "20", "--model-runs", "2"], ["--runs", "6", "--model-runs", "1"]),
    "train": (bench_train.main, ["--runs", "5"], ["--runs", "2"]),
    "infer": (bench_infer.main, ["--runs", "10"], ["--runs", "4"]),
    "data": (bench_data.main, [], ["--images", "100"]),
    "eval": (bench_eval.main, [], ["--images", "1000"]),
}


def targets(r: dict) -> list[dict]:
    """The performance targets, each a ratio measured within one run of this suite."""
    out = []

    def add(name: str, value: float | None, goal: float, above: bool = True) -> None:
        if value is not None:
            out.append({"target": name, "value": round(value, 3), "goal": goal,
                        "met": bool(value >= goal if above else value < goal)})

    train = {c["model"]: c for c in r.get("train", {}).get("cases", [])}
    if "yolov4" in train:
        t = train["yolov4"]
        add("yolov4 train step 416 b4: speed over the plain step, float32", t["speedup_fp32_over_plain"], 1.3)
        add("yolov4 train step 416 b4: speed over the plain step, bf16 autocast", t.get("speedup_bf16_over_plain"), 1.3)
        # like for like: the step's forward + backward against the convolution's, in the step's precision
        for precision in ("fp32", "bf16"):
            fraction = t.get(f"fraction_of_conv_rate_{precision}", {}).get("forward_backward")
            add(f"yolov4 train step, {precision}: fraction of the large-conv rate (forward + backward)", fraction, 0.75)
        # the loss is plain autograd, written as the documents write it; it need only stay small next to the step
        add("yolov4 train step: loss + assignment share", t["loss_share"], 0.02, above=False)
    infer = {m["model"]: m for m in r.get("infer", {}).get("models", [])}
    if "yolov4" in infer:
        m = infer["yolov4"]
        add("yolov4 inference 416 b1: best float32 PyTorch over plain eager", m["speedup_best_pytorch_over_plain"], 1.4)
        add("yolov4 inference 416 b1: bf16 PyTorch over plain eager", m.get("speedup_bf16_over_plain"), 1.4)
    if "data" in r and "yolov4" in train:
        step_rate = train["yolov4"][train["yolov4"]["best"]]["images_per_s"]
        add("data pipeline (1 worker, mosaic + mixup) over yolov4 step images/s",
            r["data"]["train_images_per_s_mosaic_mixup_0.5"] / step_rate, 2.0)
    return out


def table(r: dict) -> str:
    rows = [("machine", r["machine"]), ("torch threads", str(r["threads"]))]
    if "train" in r:
        t = r["train"]
        rows.append(("2048 matmul, float32 (GFLOP/s)", str(t["matmul_gflops_per_s"])))
        for precision, rate in t["conv_gflops_per_s"].items():
            rows.append((f"3x3 conv 256->256 52x52 b8, {precision}: forward / forward + backward (GFLOP/s)",
                         f"{rate['forward']} / {rate['forward_backward']}"))
        for c in t["cases"]:
            steps = " / ".join(f"{k} {c[k]['images_per_s']}" for k in
                               ("plain", "tuned", "tuned_channels_last", "tuned_channels_last_bf16") if k in c)
            beside = c.get("conv_forward_backward_gflops_per_s", {})  # the conv timed in alternation with the steps
            fractions = "; ".join(f"{p} {c[f'fraction_of_conv_rate_{p}']['forward_backward']:.2f}"
                                  + (f" of {beside[p]} GFLOP/s" if p in beside else "")
                                  + f" ({c[f'fraction_of_conv_rate_{p}']['forward']:.2f} of the forward rate)"
                                  for p in ("fp32", "bf16") if f"fraction_of_conv_rate_{p}" in c)
            rows.append((f"train step {c['model']} {c['input_size']} b{c['batch']} (images/s)",
                         f"{steps}; float32 {c['speedup_fp32_over_plain']}x, best {c['speedup_over_plain']}x the plain step"))
            rows.append((f"train step {c['model']}: fraction of the conv rate (forward + backward); loss share",
                         f"{fractions}; loss {100 * c['loss_share']:.1f}% of the step"))
            if "fraction_of_conv_rate_fp32_convs_only" in c:
                rows.append((f"train step {c['model']}, ceiling: the same convolutions alone, no BN or activation "
                             "(float32 channels_last)",
                             f"{c['convs_only']['images_per_s']} images/s, "
                             f"{c['fraction_of_conv_rate_fp32_convs_only']['forward_backward']:.2f} of the conv rate"))
        if "peak_rss_mb_yolov4_b8_416" in t:
            rows.append(("peak RSS, yolov4 train step 416 b8", f"{t['peak_rss_mb_yolov4_b8_416']:.0f} MB"))
    if "infer" in r:
        for m in r["infer"]["models"]:
            b1 = m["batch1_ms"]
            rows.append((f"inference {m['model']} {m['input_size']} b1 (ms)",
                         " / ".join(f"{k} {v}" for k, v in b1.items())))
            rows.append((f"inference {m['model']} {m['input_size']} b{m['batch']} (images/s)",
                         " / ".join(f"{k} {v}" for k, v in m["batched_images_per_s"].items())))
            if "bf16_max_rel_diff" in m:
                rows.append((f"inference {m['model']} bf16: largest difference from the float32 maps",
                             f"{m['bf16_max_rel_diff']} of their largest magnitude"))
    if "loss" in r:
        for c in r["loss"]["cases"]:
            rows.append((f"loss b{r['loss']['batch']} {r['loss']['input_size']}, {c['boxes_per_image']} boxes/img, "
                         f"focal {'on' if c['focal_loss'] else 'off'} (ms)",
                         f"{c['ms']} vs per-box loop {c['loop_ms']} ({c['speedup']}x)"))
    if "data" in r:
        d = r["data"]
        rows.append(("data pipeline, 1 worker (images/s at 416)",
                     f"{d['train_images_per_s_mosaic_mixup_0.5']} with mosaic + mixup, "
                     f"{d['train_images_per_s_no_mosaic_no_mixup']} without; {d['xml_files_per_s']} XML files/s"))
    if "eval" in r:
        e = r["eval"]
        rows.append((f"COCO mAP@[.5:.95] of {e.get('images')} images x {e.get('classes')} classes x {e.get('dets_per_image')} "
                     "detections (s)",
                     f"{e.get('coco_fast_s')} vs pycocotools {e.get('pycocotools_s')}"))
    lines = ["| measure | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    if r.get("targets"):
        lines += ["", "| target | measured | goal | met |", "| --- | --- | --- | --- |"]
        for t in r["targets"]:
            sign = ">=" if "share" not in t["target"] else "<"
            lines.append(f"| {t['target']} | {t['value']} | {sign} {t['goal']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), help="run only these")
    parser.add_argument("--quick", action="store_true", help="fewer timed runs")
    parser.add_argument("--out", default=str(HERE / "results.json"), help="JSON output (the .md goes beside it)")
    args = parser.parse_args(argv)
    result: dict = {"machine": f"{cpu_name()}, {torch.get_num_threads()} threads, no GPU used"
                    if not torch.cuda.is_available() else f"{cpu_name()}; {torch.cuda.get_device_name()}",
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "date": time.strftime("%Y-%m-%d")}
    for name, (fn, full, quick) in BENCHES.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        print(f"running bench_{name} ...", file=sys.stderr, flush=True)
        with contextlib.redirect_stdout(io.StringIO()):
            result[name] = fn(quick if args.quick else full)
        print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    result["targets"] = targets(result)
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = table(result)
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    return result


if __name__ == "__main__":
    main()
