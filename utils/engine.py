"""Shared by every CLI: model loading for inference, the one evaluation function, checkpoint writing."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from nets.darknet import looks_like_darknet
from nets.weights import WeightsError, checkpoint_state_dict, load_weights, read_checkpoint
from nets.yolo import YOLO, build_model
from utils.augment import unletterbox_boxes
from utils.config.files import read_anchors, read_classes
from utils.config.load import apply_overrides, config_from_dict, load_config
from utils.config.schema import Config
from utils.dataset import LetterboxDataset, collate_letterbox, worker_init
from utils.metrics import coco_evaluate_fast, voc_evaluate
from utils.postprocess import DecodeSpec, decode_predictions, non_max_suppression
from utils.voc import Record

LOGGER = logging.getLogger(__name__)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; a CUDA device that is not there is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: train.device = {name}, but CUDA is not available on this machine")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX), where bf16
    autocast and bf16 inference pay off; elsewhere oneDNN emulates it, usually slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private in torch.cpu; absent reads as no
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def warn_if_bf16_emulated(device: torch.device, setting: str) -> None:
    """Log a warning when ``setting`` asks for bf16 on a CPU without bfloat16 instructions."""
    if device.type == "cpu" and not cpu_has_native_bf16():
        LOGGER.warning("%s: this CPU has no bfloat16 instructions (AVX512-BF16 / AMX), so bf16 is emulated and "
                       "likely slower than float32", setting)


def next_run_dir(parent: str | Path, name: str = "exp") -> Path:
    """Make and return ``parent/name``, else ``name2``, ``name3``, ...: a run never overwrites another."""
    parent = Path(parent)
    for i in range(1, 10_000):
        d = parent / (name if i == 1 else f"{name}{i}")
        if not d.exists():
            d.mkdir(parents=True)
            return d
    raise RuntimeError(f"no free run directory under {parent}")


class CheckpointError(OSError):
    """A checkpoint could not be written; the previous file of that name is unchanged."""


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` durably: a temporary file in the same folder, flushed and
    fsynced, then ``os.replace`` onto ``path``, then the folder fsynced, so that neither a kill nor a
    power cut leaves a broken or missing checkpoint. A failed write (a full disk) raises
    CheckpointError and leaves the previous ``path`` as it was and no temporary file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(checkpoint, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)  # our own temporary name, never the user's file
        if isinstance(e, Exception):
            raise CheckpointError(f"could not save {path}: {e}; the previous {path.name}, if any, is unchanged") from e
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX); folders cannot be opened for this on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_for_inference(weights: str | Path, config: str | Path | None = None, overrides: Sequence[str] = (),
                       device: str | torch.device = "cpu") -> tuple[YOLO, Config, list[str], list[tuple[float, float]]]:
    """(model in eval mode, config, class names, anchors) from a ``.pt`` checkpoint, which carries them
    all, or from Darknet ``.weights`` together with a config."""
    weights = Path(weights)
    if not weights.is_file():
        raise SystemExit(f"error: weights file not found: {weights}")
    if looks_like_darknet(weights) and not weights.suffix == ".pt":
        if config is None:
            raise SystemExit("error: Darknet .weights carry no class names or anchors; give --config too")
        cfg = load_config(config, overrides)
        classes, anchors = read_classes(cfg.data.classes_path), read_anchors(cfg.model.anchors_path)
        model = build_model(cfg.model.name, len(classes))
        load_weights(model, weights)
    else:
        try:
            ckpt = read_checkpoint(weights)
            state = checkpoint_state_dict(ckpt, weights)
        except WeightsError as e:
            raise SystemExit(f"error: {e}") from None
        missing = [k for k in ("config", "class_names", "anchors", "model_name") if k not in ckpt]
        if missing:
            raise SystemExit(f"error: {weights} is a bare state dict without {', '.join(missing)}; "
                             "evaluate a checkpoint written by train.py")
        # the checkpoint's config is type-checked key by key; its file paths may belong to another machine
        cfg = load_config(config, overrides) if config else apply_overrides(config_from_dict(ckpt["config"], str(weights)),
                                                                             overrides)
        classes, anchors = list(ckpt["class_names"]), [tuple(a) for a in ckpt["anchors"]]
        model = build_model(ckpt["model_name"], len(classes))
        model.load_state_dict(state)
    return model.to(device).eval(), cfg, classes, anchors


def detect(outputs: list[torch.Tensor], spec: DecodeSpec, eval_cfg) -> list[torch.Tensor]:
    """Raw maps -> per image ``[K, 6]`` (x1, y1, x2, y2, score, class) in input pixels, with the
    configured threshold and NMS (``eval_cfg``: utils.config.schema.EvalConfig)."""
    pred = decode_predictions(outputs, spec)
    return non_max_suppression(pred, eval_cfg.conf_thres, eval_cfg.nms_iou, eval_cfg.max_det, eval_cfg.agnostic_nms)


@torch.inference_mode()
def evaluate(model, records: Sequence[Record], num_classes: int, spec: DecodeSpec, input_size: int,
             eval_cfg, device: torch.device | str = "cpu", workers: int = 0, loss_fn=None) -> dict[str, Any]:
    """The evaluation used by training and by eval.py: letterboxed batches, the configured NMS,
    detections mapped back to original pixels, VOC AP at ``eval_cfg.match_iou`` (all-point and
    07 11-point) and COCO AP@[.5:.95]. With ``loss_fn`` also the validation loss terms.
    """
    is_module = isinstance(model, torch.nn.Module)  # else a callable such as utils.inference.Backend
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
    for images, indices, infos, failed in loader:
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
        for r, i, info in zip(detect(outputs, spec, eval_cfg), indices, infos, strict=True):
            r = r.cpu().numpy()
            rec = records[i]
            r[:, :4] = unletterbox_boxes(r[:, :4], info, rec.width, rec.height)
            dets[i] = r
    if is_module:
        model.train(was_training)
    scored_dets, scored = dets, records
    if unreadable:
        LOGGER.warning("%d of %d images could not be decoded and are left out of the evaluation", len(unreadable),
                       len(records))
        kept = sorted(set(range(len(records))) - set(unreadable))
        scored_dets, scored = [dets[i] for i in kept], [records[i] for i in kept]
    voc = voc_evaluate(scored_dets, scored, num_classes, eval_cfg.match_iou, eval_cfg.score_thres)
    coco = coco_evaluate_fast(scored_dets, scored, num_classes)
    result = {"map50": voc["map"], "map50_07": voc["map07"], "map50_95": coco["AP50_95"], "coco": coco, "voc": voc,
              "dets": dets, "unreadable": len(unreadable)}
    if loss_fn is not None:
        result["val_loss"] = {k: v / max(n_batches, 1) for k, v in loss_sum.items()}
    return result


def per_class_table(result: dict, records: Sequence[Record], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of (class, images, objects, AP50 11-point, AP50 all-point, AP50-95)."""
    rows = []
    for c, name in enumerate(class_names):
        images = sum(1 for r in records if ((r.labels == c) & ~r.difficult).any())
        rows.append({"class": name, "images": images, "objects": int(result["voc"]["npos"][c]),
                     "ap50_07": float(result["voc"]["ap07"][c]), "ap50": float(result["voc"]["ap"][c]),
                     "ap50_95": float(result["coco"]["per_class_AP50_95"][c])})
    return rows


# --------------------------------------------------------------------------- training pieces


class ModelEMA:
    """Exponential moving average of a model's weights and buffers.

    The decay ramps up as ``decay * (1 - exp(-updates / tau))``, so the average follows the
    fast-changing early weights closely and smooths later (as in the YOLOv5 / Ultralytics
    trainers). Evaluation and ``best.pt`` use the average.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        import copy

        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    def current_decay(self) -> float:
        import math

        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        msd = unwrap(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel, or the model itself."""
    return model.module if hasattr(model, "module") else model


def build_optimizer(model: torch.nn.Module, name: str, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """Three parameter groups: conv weights (with weight decay), BN weights and biases (without).

    Decaying BN scales and biases only shrinks the network's freedom to rescale, so they are
    left out, as in most detection trainers. Group 2 holds the biases (the warmup gives them
    their own learning rate).
    """
    decay, bn, bias = [], [], []
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if pname == "bias":
                bias.append(p)
            elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                bn.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": bn, "weight_decay": 0.0},
              {"params": bias, "weight_decay": 0.0}]
    # the multi-tensor step on every device (PyTorch picks it by default only for CUDA tensors)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, foreach=True)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999), foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), foreach=True)
    raise ValueError(f"unknown optimizer '{name}' (sgd | adam | adamw)")


def lr_factor(progress: float, cfg) -> float:
    """Learning-rate multiple of ``cfg.lr`` at ``progress`` in [0, 1] of the run (``cfg``: TrainConfig)."""
    import math

    floor = cfg.min_lr / cfg.lr
    if cfg.schedule == "cos":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return max(cfg.lr_step_gamma ** sum(progress >= s for s in cfg.lr_steps), floor)


def set_lr(optimizer: torch.optim.Optimizer, cfg, progress: float, it: int, warmup_iters: int, base_lr: float) -> float:
    """Per-iteration learning rate and momentum: linear warmup (biases from ``warmup_bias_lr`` down,
    the others from 0 up, momentum from ``warmup_momentum``), then the schedule. Returns the lr."""
    target = base_lr * lr_factor(progress, cfg)
    momentum = cfg.momentum
    for i, group in enumerate(optimizer.param_groups):
        lr = target
        if it < warmup_iters:
            w = it / warmup_iters
            start = cfg.warmup_bias_lr if i == 2 else 0.0
            lr = start + (target - start) * w
            momentum = cfg.warmup_momentum + (cfg.momentum - cfg.warmup_momentum) * w
        group["lr"] = lr
        if "momentum" in group:
            group["momentum"] = momentum
        elif "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
    return target if it >= warmup_iters else optimizer.param_groups[0]["lr"]


def freeze_backbone(model: torch.nn.Module, frozen: bool) -> None:
    """(Un)freeze the backbone's parameters; frozen BatchNorm layers are kept in eval mode by :func:`train_mode`."""
    for p in unwrap(model).backbone.parameters():
        p.requires_grad_(not frozen)


def train_mode(model: torch.nn.Module, frozen: bool) -> None:
    """``model.train()``, with the backbone's BatchNorm in eval mode while it is frozen."""
    model.train()
    if frozen:
        for m in unwrap(model).backbone.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
