"""One epoch of training and one evaluation, as torchvision's detection ``engine.py`` names them.

:func:`train_one_epoch` is the step loop (autocast, loss, accumulation, clipping, EMA, the progress
bar); :func:`evaluate` is the evaluation that training, eval.py and the tools share."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from nets.box_coding import LevelSpec
from utils.console import progress as progress_bar
from utils.data.augment import unletterbox_boxes
from utils.data.dataset import LetterboxDataset, collate_letterbox, worker_init
from utils.data.records import Record
from utils.infer.postprocess import detect
from utils.metrics.coco import coco_evaluate_fast
from utils.metrics.voc import confusion_matrix, voc_evaluate
from utils.runtime import unwrap
from utils.train.ema import ModelEMA

LOGGER = logging.getLogger(__name__)


class TrainingStopped(RuntimeError):
    """Raised when the run cannot go on (non-finite losses); last.pt has been saved."""


BAR_EVERY = 10  # iterations between progress-bar updates (each reads the running sums from the device)


@dataclass
class StepSettings:
    """How the steps of one epoch run (utils/train/fit.py makes one per epoch)."""

    lr_at: Callable[[int], float]  # sets the optimizer's lr and momentum for the epoch's i-th batch; returns the lr
    accumulate: int = 1  # batches per optimizer step
    dtype: torch.dtype | None = None  # autocast precision; None: float32
    channels_last: bool = False  # images to channels_last, as the model
    scaler: Any = field(default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False))  # disabled: plain steps
    ema: ModelEMA | None = None  # updated after each optimizer step
    grad_clip: float = 0.0  # max gradient norm; 0: no clipping
    max_bad_steps: int = 10  # non-finite losses in a row before the run stops
    epochs: int = 1  # for the progress bar's "epoch 3/60"
    stop_requested: Callable[[], bool] = lambda: False  # a signal asked the run to stop: the epoch ends early
    show: bool = True  # the progress bar (rank 0)
    world: int = 1  # processes of a distributed run


def train_one_epoch(model, loss_fn, loader, optimizer, device, epoch: int, step: StepSettings) -> dict[str, Any]:
    """One pass over ``loader``; returns the mean loss terms, the last lr, the counts (positives, collisions,
    skipped steps), the seconds spent waiting for data, and whether a stop was asked."""
    n = len(loader)
    # loc, conf, cls, total, num_pos, collisions: summed on the device; read back only for the bar and at the end
    acc = torch.zeros(6, dtype=torch.float64, device=device)
    bad = consecutive = done = 0
    lr = 0.0
    images_seen, t0 = 0, time.perf_counter()
    waits: list[float] = []  # seconds each batch was waited for: the time the loader did not keep up
    bar = progress_bar(_batches(loader, step.stop_requested, waits), total=n, desc=f"epoch {epoch + 1}/{step.epochs}",
                       enabled=step.show)
    optimizer.zero_grad(set_to_none=True)
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    scaler = step.scaler
    for i, (images, targets) in enumerate(bar):
        lr = step.lr_at(i)
        images = images.to(device, non_blocking=True)
        if step.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=step.dtype or torch.float32, enabled=step.dtype is not None):
            outputs = model(images)
        total, terms = loss_fn(outputs, targets)
        finite = torch.isfinite(total).to(torch.int32)
        if step.world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not finite.item():
            bad += 1
            consecutive += 1
            optimizer.zero_grad(set_to_none=True)
            LOGGER.warning("non-finite loss at epoch %d, iteration %d: step skipped (%d in a row)", epoch + 1, i, consecutive)
            if consecutive >= step.max_bad_steps:
                raise TrainingStopped(f"{consecutive} non-finite losses in a row (train.max_bad_steps); "
                                      "try a lower train.lr or train.amp=off")
            continue
        consecutive = 0
        scaler.scale(total / step.accumulate).backward()
        if (i + 1) % step.accumulate == 0 or i + 1 == n:
            if step.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, step.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if step.ema is not None:
                step.ema.update(model)
        acc += torch.stack((terms["loc"], terms["conf"], terms["cls"], total.detach(), terms["num_pos"],
                            terms["collisions"])).to(torch.float64)
        done += 1
        images_seen += len(images)
        if step.show and (i % BAR_EVERY == 0 or i + 1 == n):  # the one host read of the running sums, every few steps
            post = {k: f"{v / done:.4f}" for k, v in zip(("loc", "conf", "cls", "total"), acc[:4].tolist(), strict=True)}
            post.update(lr=f"{lr:.2e}", img_s=f"{images_seen * step.world / (time.perf_counter() - t0):.1f}")
            if device.type == "cuda":
                post["mem"] = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}G"
            bar.set_postfix(post, refresh=False)
        if step.stop_requested():
            break
    bar.close()
    sums = acc.tolist()
    means = {k: v / max(done, 1) for k, v in zip(("loc", "conf", "cls", "total"), sums[:4], strict=True)}
    return {"loss": means, "lr": lr, "bad_steps": bad, "iterations": n, "stopped": step.stop_requested(),
            "num_pos": int(sums[4]), "collisions": int(sums[5]), "data_seconds": sum(waits)}


def _batches(loader, stop_requested, waits: list[float]):
    """The loader's batches, with the seconds each was waited for appended to ``waits``. When a stop was asked
    and the loader fails, the epoch ends there without an error: a process group's SIGTERM (a job scheduler's)
    also kills the loader's workers, which is the stop's doing. Starting the epoch is inside that rule: the
    workers last the run, and ``iter(loader)`` already waits on them."""
    t0 = time.perf_counter()
    it = None
    while True:
        try:
            if it is None:
                it = iter(loader)
            batch = next(it)
        except StopIteration:
            return
        except RuntimeError:
            if stop_requested():
                return
            raise
        waits.append(time.perf_counter() - t0)
        yield batch
        t0 = time.perf_counter()


@torch.inference_mode()
def evaluate(model, records: Sequence[Record], num_classes: int, spec: LevelSpec, input_size: int,
             eval_cfg, device: torch.device | str = "cpu", workers: int = 0, loss_fn=None,
             progress: bool = True) -> dict[str, Any]:
    """The evaluation used by training and by eval.py: letterboxed batches, the configured NMS,
    detections mapped back to original pixels, VOC AP at ``eval_cfg.match_iou`` (all-point and
    07 11-point), P and R at the best-F1 score, and COCO AP@[.5:.95]. With ``loss_fn`` also the validation
    loss terms. ``progress``: a progress bar over the batches.
    """
    is_module = isinstance(model, torch.nn.Module)  # else a callable such as utils.infer.backend.Backend
    was_training = is_module and model.training
    if is_module:
        model.eval()
    ds = LetterboxDataset(records, input_size)
    loader = DataLoader(ds, batch_size=eval_cfg.batch_size, num_workers=workers, collate_fn=collate_letterbox,
                        worker_init_fn=worker_init if workers else None)
    dets: list[np.ndarray] = [np.zeros((0, 6), np.float32)] * len(records)
    unreadable: list[int] = []  # images that failed to decode: counted, and left out of the metrics
    loss_sum = {"loc": 0.0, "conf": 0.0, "cls": 0.0}
    n_batches = 0
    for images, indices, infos, failed in progress_bar(loader, total=len(loader), desc="eval", enabled=progress,
                                                       leave=False):
        unreadable += failed
        if images is None:
            continue
        images = images.to(device, non_blocking=True)
        outputs = model(images)
        if loss_fn is not None:
            _, terms = loss_fn(outputs, ds.batch_targets(indices).to(device))
            for k in loss_sum:
                loss_sum[k] += float(terms[k])
            n_batches += 1
        # a Backend decodes its own outputs (an --nms graph has done it inside); a model's raw maps are decoded here
        found = model.detections(outputs, eval_cfg) if hasattr(model, "detections") else detect(outputs, spec, eval_cfg)
        for r, i, info in zip(found, indices, infos, strict=True):
            r = r.cpu().numpy()
            rec = records[i]
            r[:, :4] = unletterbox_boxes(r[:, :4], info, rec.width, rec.height)
            dets[i] = r
    if is_module:
        model.train(was_training)
    result = score_detections(dets, records, num_classes, eval_cfg, unreadable)
    if loss_fn is not None:
        result["val_loss"] = {k: v / max(n_batches, 1) for k, v in loss_sum.items()}
    return result


def score_detections(dets: Sequence[np.ndarray], records: Sequence[Record], num_classes: int, eval_cfg,
                     unreadable: Sequence[int] = ()) -> dict[str, Any]:
    """The metrics of detections ``[n, 6]`` (x1, y1, x2, y2, score, class in original pixels), one array per
    record: VOC AP at ``eval_cfg.match_iou`` (all-point and 07 11-point), P and R at the best-F1 score, COCO
    AP@[.5:.95] and the confusion matrix. Records listed in ``unreadable`` are left out."""
    dets = list(dets)
    scored_dets, scored = dets, records
    if unreadable:
        LOGGER.warning("%d of %d images could not be decoded and are left out of the evaluation", len(unreadable),
                       len(records))
        kept = sorted(set(range(len(records))) - set(unreadable))
        scored_dets, scored = [dets[i] for i in kept], [records[i] for i in kept]
    voc = voc_evaluate(scored_dets, scored, num_classes, eval_cfg.match_iou, eval_cfg.score_thres)
    coco = coco_evaluate_fast(scored_dets, scored, num_classes)
    confusion = confusion_matrix(scored_dets, scored, num_classes, eval_cfg.score_thres, eval_cfg.match_iou)
    with np.errstate(all="ignore"):  # all-NaN (no class with ground truth) stays NaN
        p, r = float(np.nanmean(voc["p_at_best_f1"])), float(np.nanmean(voc["r_at_best_f1"]))
    return {"map50": voc["map"], "map50_07": voc["map07"], "map50_95": coco["AP50_95"], "coco": coco, "voc": voc,
            "precision": p, "recall": r, "confusion": confusion, "dets": dets, "unreadable": len(unreadable)}
