"""Loss benchmark: forward + backward of YOLOLoss against the classic per-box-loop assignment.

    python -m bench.bench_loss [--batch 16] [--size 416] [--runs 10] [--model-runs 2] [--json out.json]

For 10 and 50 boxes per image, focal on and off: the median milliseconds of one loss
forward + backward (assignment included) on random yolov4 maps for 20 classes, with the
vectorized assignment and with the baseline below, which assigns box by box in Python as
the classic YOLOv3/v4 ports do (the loss terms are the same code, so both give the same
total, checked here). Box sides are log-uniform from 8 px to half the input.
Then the median time of a yolov4 forward + backward at the same batch
and input, and the loss's share of it.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from torchvision.ops import box_iou

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, median_ms, median_ms_interleaved  # noqa: E402
from nets.assign import Assignment, LevelTargets, TargetAssigner  # noqa: E402
from nets.box_coding import decode_boxes, to_per_anchor  # noqa: E402
from nets.loss import YOLOLoss  # noqa: E402
from nets.yolo import build_model  # noqa: E402
from utils.boxes import shape_iou  # noqa: E402
from utils.config.files import REPO_ROOT, read_anchors  # noqa: E402

STRIDES = (8, 16, 32)
MASKS = ((0, 1, 2), (3, 4, 5), (6, 7, 8))


class LoopAssigner(TargetAssigner):
    """The baseline: the classic assignment (YOLOLoss.build(..., assigner_cls=LoopAssigner) gives the same terms on it).

    As in the common PyTorch YOLOv3/v4 ports: per level and per image, the anchor shape IoUs
    of that image's boxes at once, then a Python loop over the boxes that writes each
    positive into the target tensors by scalar indexing; the ignore mask per image.
    """

    @torch.no_grad()
    def assign(self, outputs: list[torch.Tensor], targets: torch.Tensor) -> Assignment:
        preds = [to_per_anchor(o, self.num_anchors) for o in outputs]
        batch = preds[0].shape[0]
        boxes = [decode_boxes(p, self.level_anchors(i), self.strides[i], self.scale_x_y[i]) for i, p in enumerate(preds)]
        used = torch.tensor(sorted({k for m in self.anchor_masks for k in m}))
        levels = []
        for lvl, pred in enumerate(boxes):
            _, n_a, hh, ww, _ = pred.shape
            s = self.strides[lvl]
            mask = list(self.anchor_masks[lvl])
            obj = torch.zeros(batch, n_a, hh, ww, dtype=torch.bool)
            best_iou = torch.zeros(batch, n_a, hh, ww)
            owner = torch.full((batch, n_a, hh, ww), -1, dtype=torch.long)
            ignore = torch.zeros(batch, n_a, hh, ww, dtype=torch.bool)
            for b in range(batch):
                rows = (targets[:, 0] == b).nonzero().flatten()
                if len(rows) == 0:
                    continue
                t = targets[rows]
                wh = t[:, 4:6] - t[:, 2:4]
                ious = shape_iou(wh, self.anchors)  # [n, K]
                best_ns = used[ious[:, used].argmax(1)]
                for i, best_n in enumerate(best_ns):
                    if int(best_n) not in mask or wh[i, 0] <= 0 or wh[i, 1] <= 0:
                        continue
                    k = mask.index(int(best_n))
                    gx = min(int(torch.floor((t[i, 2] + t[i, 4]) / 2 / s)), ww - 1)
                    gy = min(int(torch.floor((t[i, 3] + t[i, 5]) / 2 / s)), hh - 1)
                    if obj[b, k, gy, gx] and ious[i, best_n] <= best_iou[b, k, gy, gx]:
                        continue
                    obj[b, k, gy, gx] = True
                    best_iou[b, k, gy, gx] = ious[i, best_n]
                    owner[b, k, gy, gx] = rows[i]
                ignore[b] = box_iou(pred[b].reshape(-1, 4), t[:, 2:6]).amax(1).view(n_a, hh, ww) > self.ignore_thresh
            ignore &= ~obj
            b_i, a_i, gy_i, gx_i = obj.nonzero(as_tuple=True)
            ms = owner[b_i, a_i, gy_i, gx_i]
            levels.append(LevelTargets(obj, ignore, b_i, a_i, gy_i, gx_i, targets[ms, 2:6].float(), targets[ms, 1].long()))
        num_pos = sum(lv.obj_mask.sum() for lv in levels)
        zero = torch.zeros((), dtype=torch.long)
        return Assignment(levels, {"num_pos": num_pos, "collisions": zero, "ignored": zero, "invalid_targets": zero})


def make_inputs(batch: int, size: int, boxes: int, num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ch = 3 * (5 + num_classes)
    maps = [torch.randn(batch, ch, size // s, size // s, generator=g) for s in STRIDES]
    cxy = torch.rand(batch * boxes, 2, generator=g) * size
    # sides log-uniform from 8 px to half the input: many small objects, fewer large, as in real sets
    wh = torch.exp(torch.empty(batch * boxes, 2).uniform_(math.log(8), math.log(size / 2), generator=g))
    img = torch.arange(batch).repeat_interleave(boxes)[:, None].float()
    cls = torch.randint(0, num_classes, (batch * boxes, 1), generator=g).float()
    targets = torch.cat([img, cls, (cxy - wh / 2).clamp(0, size), (cxy + wh / 2).clamp(0, size)], 1)
    return maps, targets


def loss_step(loss: YOLOLoss, maps: list[torch.Tensor], targets: torch.Tensor):
    """A loss forward + backward as a function, and the loss's total on these inputs."""
    leaves = [m.clone().requires_grad_() for m in maps]

    def step() -> None:
        for leaf in leaves:
            leaf.grad = None  # as optimizer.zero_grad(set_to_none=True) in training
        total, _ = loss(leaves, targets)
        total.backward()

    return step, loss(leaves, targets)[0].item()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--boxes", type=int, nargs="+", default=[10, 50], help="boxes per image")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per loss measurement (median)")
    parser.add_argument("--model-runs", type=int, default=2, help="timed yolov4 forward + backward runs; 0 skips")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    anchors = read_anchors(REPO_ROOT / "model_data" / "yolo_anchors.txt")
    result: dict = {"bench": "loss", "batch": args.batch, "input_size": args.size, "num_classes": args.classes,
                    "threads": torch.get_num_threads(), "cases": []}
    for n_boxes in args.boxes:
        maps, targets = make_inputs(args.batch, args.size, n_boxes, args.classes)
        for focal in (False, True):
            kw = {"focal_loss": focal}
            fast = YOLOLoss.build(args.classes, anchors, STRIDES, args.size, MASKS, **kw)
            slow = YOLOLoss.build(args.classes, anchors, STRIDES, args.size, MASKS, assigner_cls=LoopAssigner, **kw)
            step_fast, total_fast = loss_step(fast, maps, targets)
            step_loop, total_loop = loss_step(slow, maps, targets)
            ms = median_ms_interleaved({"fast": step_fast, "loop": step_loop},
                                       {"fast": args.runs, "loop": args.runs})
            ms_fast, ms_loop = ms["fast"], ms["loop"]
            result["cases"].append({
                "boxes_per_image": n_boxes, "focal_loss": focal, "ms": round(ms_fast, 2), "loop_ms": round(ms_loop, 2),
                "speedup": round(ms_loop / ms_fast, 1), "same_total": abs(total_fast - total_loop) <= 1e-5 * abs(total_loop),
            })
    if args.model_runs:
        torch.manual_seed(0)
        model = build_model("yolov4", args.classes)
        x = torch.rand(args.batch, 3, args.size, args.size)

        def fwd_bwd() -> None:
            model.zero_grad(set_to_none=True)
            sum(o.float().mean() for o in model(x)).backward()

        ms_model = median_ms(fwd_bwd, args.model_runs, warmup=1)
        result["yolov4_forward_backward_ms"] = round(ms_model, 1)
        for case in result["cases"]:
            case["share_of_model_step"] = round(case["ms"] / ms_model, 4)
    return emit(result, args.json)


if __name__ == "__main__":
    main()
