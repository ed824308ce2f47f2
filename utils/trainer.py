"""The training run: data, model, phases, schedule, EMA, evaluation, checkpoints, logs (train.py calls :func:`fit`).

Distributed runs start with ``torchrun``; rank 0 alone writes files, logs and evaluates.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from nets.loss import YOLOLoss
from nets.weights import WeightsError, load_weights, read_checkpoint
from nets.yolo import build_model, model_summary
from utils.augment import AugmentParams
from utils.config.files import read_anchors, read_classes
from utils.config.load import config_from_dict, save_config
from utils.config.schema import Config, all_keys
from utils.dataset import TrainDataset, build_train_loader
from utils.engine import (
    ModelEMA,
    build_optimizer,
    evaluate,
    freeze_backbone,
    next_run_dir,
    save_checkpoint,
    select_device,
    set_lr,
    train_mode,
    unwrap,
    warn_if_bf16_emulated,
)
from utils.postprocess import DecodeSpec
from utils.shapes import ensure_shapes
from utils.voc import class_counts, load_records

LOGGER = logging.getLogger(__name__)
CSV_FIELDS = ["epoch", "lr", "train_loc", "train_conf", "train_cls", "train_total", "val_loc", "val_conf", "val_cls",
              "map50", "map50_07", "map50_95", "num_pos", "collisions", "bad_steps", "seconds"]


class TrainingStopped(RuntimeError):
    """Raised when the run cannot go on (non-finite losses); last.pt has been saved."""


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed as asked; the message names the file and the reason."""


# What --resume may change: where the files are and what machine runs the rest, never what the run computes.
# train.time_limit only upward (an extension); everything else would make the resumed run another experiment.
RESUME_FREE = ("data.root", "data.classes_path", "model.anchors_path", "model.weights", "data.workers", "data.cache",
               "train.device", "train.time_limit")
RESUME_KEYS = ("model", "optimizer", "scaler", "epoch", "iteration", "best_fitness", "config", "class_names", "anchors",
               "model_name", "rng")  # what a checkpoint must hold to be resumed (train.py writes them all)


def _dotted(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def check_resume_changes(saved: Config, cfg: Config, source: str | Path) -> list[str]:
    """The keys where ``cfg`` differs from a checkpoint's ``saved`` config, all of them in RESUME_FREE;
    raise ResumeError naming every other key that differs."""
    changed = [k for k in all_keys() if _dotted(saved, k) != _dotted(cfg, k)]
    old_limit, new_limit = saved.train.time_limit, cfg.train.time_limit
    refused = [k for k in changed if k not in RESUME_FREE or (k == "train.time_limit" and not 0 < old_limit <= new_limit)]
    if refused:
        what = ", ".join(f"{k} ({_dotted(saved, k)!r} in the run, {_dotted(cfg, k)!r} now)" for k in refused)
        raise ResumeError(f"--resume {source}: {what} would change what the run computes; on resume only "
                          f"{', '.join(RESUME_FREE)} may change (the time limit only upward): start a new run "
                          "for the rest")
    return changed


def resume_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (), config: str | Path | None = None) -> Config:
    """The config that resumes the checkpoint ``path``: its own saved config (or the file ``config``,
    which must describe the same run) with ``overrides`` applied, checked by :func:`check_resume_changes`."""
    from utils.config.load import apply_overrides, load_config, validate

    saved = config_from_dict(read_checkpoint(path, RESUME_KEYS, mmap=True)["config"], str(path))
    cfg = load_config(config, overrides) if config else validate(apply_overrides(config_from_dict(saved.to_dict()), overrides))
    check_resume_changes(saved, cfg, path)
    return cfg


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def amp_dtype(cfg_amp: str, device: torch.device) -> torch.dtype | None:
    """``auto``: float16 on CUDA, none on the CPU; ``fp16`` / ``bf16`` / ``off`` as named."""
    if cfg_amp == "auto":
        return torch.float16 if device.type == "cuda" else None
    if cfg_amp == "bf16":
        warn_if_bf16_emulated(device, "train.amp=bf16")
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "off": None}[cfg_amp]


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                                                      int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


BAR_EVERY = 10  # iterations between progress-bar updates (each reads the running sums from the device)


def train_one_epoch(model, loss_fn, loader, optimizer, device, *, cfg, epoch: int, epochs: int, base_lr: float,
                    warmup_iters: int, start_iter: int, accumulate: int, ema: ModelEMA | None, scaler, dtype,
                    stop_requested, show: bool, world: int) -> dict[str, Any]:
    """One pass over ``loader``; returns mean loss terms, the last lr, counts, and whether a stop was asked."""
    n = len(loader)
    # loc, conf, cls, total, num_pos, collisions: summed on the device; read back only for the bar and at the end
    acc = torch.zeros(6, dtype=torch.float64, device=device)
    bad = consecutive = done = 0
    lr = 0.0
    images_seen, t0 = 0, time.perf_counter()
    bar = tqdm(_batches(loader, stop_requested), total=n, desc=f"epoch {epoch + 1}/{epochs}", disable=not show,
               leave=True, dynamic_ncols=True)
    optimizer.zero_grad(set_to_none=True)
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    for i, (images, targets) in enumerate(bar):
        it = start_iter + i
        lr = set_lr(optimizer, cfg.train, (epoch + i / n) / epochs, it, warmup_iters, base_lr)
        images = images.to(device, non_blocking=True)
        if cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = model(images)
        total, terms = loss_fn(outputs, targets)
        finite = torch.isfinite(total).to(torch.int32)
        if world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not finite.item():
            bad += 1
            consecutive += 1
            optimizer.zero_grad(set_to_none=True)
            LOGGER.warning("non-finite loss at epoch %d, iteration %d: step skipped (%d in a row)", epoch + 1, i, consecutive)
            if consecutive >= cfg.train.max_bad_steps:
                raise TrainingStopped(f"{consecutive} non-finite losses in a row (train.max_bad_steps); "
                                      "try a lower train.lr or train.amp=off")
            continue
        consecutive = 0
        scaler.scale(total / accumulate).backward()
        if (i + 1) % accumulate == 0 or i + 1 == n:
            if cfg.train.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
        acc += torch.stack((terms["loc"], terms["conf"], terms["cls"], total.detach(), loss_fn.stats["num_pos"],
                            loss_fn.stats["collisions"])).to(torch.float64)
        done += 1
        images_seen += len(images)
        if show and (i % BAR_EVERY == 0 or i + 1 == n):  # the one host read of the running sums, every few steps
            post = {k: f"{v / done:.4f}" for k, v in zip(("loc", "conf", "cls", "total"), acc[:4].tolist(), strict=True)}
            post.update(lr=f"{lr:.2e}", img_s=f"{images_seen * world / (time.perf_counter() - t0):.1f}")
            if device.type == "cuda":
                post["mem"] = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}G"
            bar.set_postfix(post, refresh=False)
        if stop_requested():
            break
    bar.close()
    sums = acc.tolist()
    means = {k: v / max(done, 1) for k, v in zip(("loc", "conf", "cls", "total"), sums[:4], strict=True)}
    return {"loss": means, "lr": lr, "bad_steps": bad, "iterations": n, "stopped": stop_requested(),
            "num_pos": int(sums[4]), "collisions": int(sums[5])}


def _batches(loader, stop_requested):
    """The loader's batches. When a stop was asked and the loader fails, the epoch ends there without an error:
    a process group's SIGTERM (a job scheduler's) also kills the loader's workers, which is the stop's doing."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except RuntimeError:
            if stop_requested():
                return
            raise
        yield batch


def fit(cfg: Config, resume: str | Path | None = None, stop_after: int | None = None,
        return_model: bool = False) -> dict[str, Any]:
    """Train per ``cfg``; returns the final metrics. ``resume``: a ``last.pt`` to continue from.

    ``stop_after``: end this invocation after that many epochs, as a signal would (last.pt
    saved, the schedule still planned for all epochs); ``return_model``: put the final weights
    in the result under ``state_dict`` (both for tests and tools).
    """
    rank, world, local_rank = dist_info()
    main = rank == 0
    device = select_device(cfg.train.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    seed_everything(cfg.train.seed, cfg.train.deterministic)

    ckpt = None
    if resume is not None:
        ckpt = read_checkpoint(resume, RESUME_KEYS)
        changed = check_resume_changes(config_from_dict(ckpt["config"], str(resume)), cfg, resume)
        if changed and main:
            print(f"resume: {', '.join(changed)} changed ({', '.join(f'{k} = {_dotted(cfg, k)!r}' for k in changed)})")

    classes = read_classes(cfg.data.classes_path)
    anchors = read_anchors(cfg.model.anchors_path)
    if ckpt is not None:
        if ckpt["model_name"] != cfg.model.name or list(ckpt["class_names"]) != classes:
            raise ResumeError(f"{resume} is a {ckpt['model_name']} for {len(ckpt['class_names'])} classes "
                              f"({', '.join(ckpt['class_names'])}); the config asks for {cfg.model.name} with "
                              f"{len(classes)} ({', '.join(classes)})")
        if [tuple(map(float, a)) for a in ckpt["anchors"]] != [tuple(map(float, a)) for a in anchors]:
            raise ResumeError(f"{resume} was trained with other anchors than {cfg.model.anchors_path} holds")
    if main:
        made = ensure_shapes(cfg, classes)
        if made:
            print(f"made the synthetic shapes set in {made} (once; reused while the shapes settings stay the same)")
    if world > 1:
        dist.barrier()
    train_records, _ = load_records(cfg.data, cfg.data.train_splits, classes, write_cache=main)
    val_records, _ = load_records(cfg.data, cfg.data.val_splits, classes, write_cache=main)

    model = build_model(cfg.model.name, len(classes), cfg.model.obj_prior, cfg.model.cls_prior)
    if cfg.model.weights and ckpt is None:
        load_weights(model, cfg.model.weights)
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = YOLOLoss.from_config(cfg, len(classes), anchors, model.strides, model.anchor_masks).to(device)
    optimizer = build_optimizer(model, cfg.train.optimizer, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay)
    dtype = amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = ModelEMA(model, cfg.train.ema_decay, cfg.train.ema_tau) if cfg.train.ema else None
    spec = DecodeSpec.for_model(model, anchors, cfg.model.scale_x_y)

    start_epoch, iteration, best, elapsed_before = 0, 0, (-1.0, -math.inf), 0.0
    epochs = cfg.train.epochs
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema"):
            ema.ema.load_state_dict(ckpt["ema"])
            ema.updates = int(ckpt["ema_updates"])
        start_epoch, iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
        best = tuple(ckpt["best_fitness"])
        epochs = int(ckpt.get("epochs", epochs))
        elapsed_before = float(ckpt.get("elapsed", 0.0))
        _set_rng_state(ckpt["rng"])
        # the rows the run keeps: those of the epochs done, less one whose evaluation a kill cut (it runs again)
        run_dir = _resume_run_dir(Path(resume), cfg, start_epoch - bool(ckpt.get("pending_row")), main)
        if run_dir == Path(resume).parent:  # the best score may be newer in best.pt (a kill between the two saves)
            best = max(best, _best_fitness(run_dir / "best.pt"))
    else:
        run_dir = next_run_dir(cfg.train.save_dir, cfg.train.name) if main else Path(cfg.train.save_dir)
    if cfg.train.sync_bn and world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = model  # the bare model; `model` below is what runs the forward (DDP-wrapped when distributed)

    if main:
        save_config(cfg, run_dir / "config.yaml")
        counts, _ = class_counts(train_records, len(classes))
        summary = model_summary(unwrap(model), cfg.model.input_size)
        print(f"run: {run_dir}")
        print(f"data: {len(train_records)} train images, {len(val_records)} val images; objects per class: "
              + ", ".join(f"{c} {n}" for c, n in zip(classes, counts, strict=True)))
        print(f"model: {cfg.model.name}, {summary['params']:,} parameters, {summary['gflops']:.2f} GFLOPs at "
              f"{cfg.model.input_size}; device {device}{', world ' + str(world) if world > 1 else ''}")
        lf = cfg.loss
        print("objectness: " + (f"focal (alpha {lf.focal_alpha}, gamma {lf.focal_gamma}, ratio {lf.focal_loss_ratio}, "
                                f"normalize {lf.focal_normalize})" if lf.focal_loss else "BCE")
              + f"; classes: {'focal' if lf.focal_cls else 'BCE'}, label smoothing {lf.label_smoothing}")

    dataset = TrainDataset(train_records, cfg.model.input_size, AugmentParams.from_config(cfg.data),
                           mosaic=cfg.data.mosaic, mixup=cfg.data.mixup, close_mosaic=cfg.data.close_mosaic,
                           epochs=epochs, seed=cfg.train.seed)
    phases = {"train.batch_size": cfg.train.batch_size} if cfg.train.freeze_epochs < epochs else {}
    if cfg.train.freeze_epochs:
        phases["train.freeze_batch_size"] = cfg.train.freeze_batch_size
    for key, b in phases.items():
        if main and len(dataset) < b * world:  # the loader keeps the one partial batch (utils.dataset.build_train_loader)
            LOGGER.warning("the training split has %d images, fewer than one batch of %d (%s): each epoch of that "
                           "phase is one step of %d images", len(dataset), b * world, key, len(dataset))
    stop: dict[str, Any] = {"asked": 0}  # the signal that asked the run to stop, 0 = none

    def on_signal(signum, _frame) -> None:
        stop["asked"] = signum
        LOGGER.warning("signal %d: finishing the current iteration and saving last.pt", signum)
        if hasattr(signal, "SIGCHLD") and "sigchld" not in stop:
            # a process group's SIGTERM also ends the DataLoader's workers, and PyTorch's SIGCHLD handler would raise
            # in the middle of the step (even between the optimizer's updates): from now on their end is expected
            stop["sigchld"] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    writer = None
    if main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir))
        except ImportError:
            LOGGER.debug("tensorboard is not installed; no event files")

    t_start = time.time()

    def save(name: str, next_epoch: int, pending_row: dict | None = None) -> None:  # the state now, resuming at next_epoch
        _save(run_dir / name, model, ema, optimizer, scaler, next_epoch, iteration, best, cfg, classes, anchors, epochs,
              elapsed_before + time.time() - t_start, pending_row)

    eval_seconds: list[float] = []
    result: dict[str, Any] = {}

    def end_epoch(n: int, row: dict[str, Any], evaluate_now: bool) -> None:
        """Epoch ``n`` (1-based) has trained (rank 0): its evaluation when due, its row, best.pt, last.pt, epochN.pt."""
        nonlocal best, result
        if evaluate_now:  # the epoch's training is safe before evaluation starts; resumed, the evaluation runs then
            save("last.pt", n, pending_row=row)
            t_eval = time.time()
            try:
                result = _evaluate(ema.ema if ema is not None else unwrap(model), val_records, classes, spec, cfg,
                                   device, loss_fn)
            except RuntimeError:
                if not stop["asked"]:
                    raise
                return  # the stop's signal also ended the evaluation's loader workers; resumed, it runs again
            eval_seconds.append(time.time() - t_eval)
            row.update({f"val_{k}": v for k, v in result["val_loss"].items()}, map50=result["map50"],
                       map50_07=result["map50_07"], map50_95=result["map50_95"],
                       seconds=round(row["seconds"] + eval_seconds[-1], 1))
            fitness = (result["map50"], -sum(result["val_loss"].values()))
            print(f"epoch {n}: mAP50 {result['map50']:.4f} (07: {result['map50_07']:.4f}), "
                  f"mAP50-95 {result['map50_95']:.4f}, val loss {sum(result['val_loss'].values()):.4f}")
            if fitness > best:
                best = fitness
                save("best.pt", n)
        _append_csv(run_dir / "results.csv", row)
        if writer is not None:
            for k, v in row.items():
                if k != "epoch" and v is not None:
                    writer.add_scalar(k, v, n)
        save("last.pt", n)
        if cfg.train.save_period and n % cfg.train.save_period == 0:
            save(f"epoch{n}.pt", n)

    if main and ckpt is not None and ckpt.get("pending_row"):  # stopped in the middle of an epoch's evaluation
        end_epoch(start_epoch, dict(ckpt["pending_row"]), True)
    epoch = start_epoch
    try:
        while epoch < epochs:
            t_epoch = time.time()
            frozen = epoch < cfg.train.freeze_epochs
            batch = cfg.train.freeze_batch_size if frozen else cfg.train.batch_size
            loader = build_train_loader(dataset, batch, cfg.data.workers, cfg.train.seed + epoch, rank, world)
            if world > 1:
                loader.sampler.set_epoch(epoch)
            dataset.epochs = epochs
            dataset.set_epoch(epoch)
            if world > 1 and (epoch == start_epoch or frozen != (epoch - 1 < cfg.train.freeze_epochs)):
                # DDP hooks the parameters that need gradients when it is built: rebuild it per phase
                freeze_backbone(net, frozen)
                model = torch.nn.parallel.DistributedDataParallel(
                    net, device_ids=[device] if device.type == "cuda" else None)
            freeze_backbone(net, frozen)
            train_mode(model, frozen)
            accumulate = max(round(cfg.train.nominal_batch / (batch * world)), 1) if cfg.train.accumulate else 1
            base_lr = cfg.train.lr if cfg.train.accumulate else cfg.train.lr * batch * world / cfg.train.nominal_batch
            warmup_iters = round(cfg.train.warmup_epochs * len(loader))
            out = train_one_epoch(model, loss_fn, loader, optimizer, device, cfg=cfg, epoch=epoch, epochs=epochs,
                                  base_lr=base_lr, warmup_iters=warmup_iters, start_iter=iteration,
                                  accumulate=accumulate, ema=ema, scaler=scaler, dtype=dtype,
                                  stop_requested=lambda: bool(stop["asked"]), show=main, world=world)
            if out["stopped"]:  # resumed, the epoch starts again from its first iteration
                if main:
                    save("last.pt", epoch)
                break
            iteration += out["iterations"]
            elapsed = elapsed_before + time.time() - t_start
            last = epoch + 1 == epochs
            if cfg.train.time_limit and not last:  # fit the epoch count to the budget
                per_epoch = (time.time() - t_start) / (epoch + 1 - start_epoch)
                per_eval = (sum(eval_seconds) / len(eval_seconds)) if eval_seconds else per_epoch * 0.2
                left = cfg.train.time_limit * 60 - elapsed - per_eval
                new_epochs = max(epoch + 1, min(epoch + 1 + int(left // (per_epoch + per_eval / cfg.train.eval_period)),
                                               10 * cfg.train.epochs))
                if new_epochs != epochs and main:
                    print(f"time limit {cfg.train.time_limit} min: {new_epochs} epochs instead of {epochs}")
                epochs = new_epochs
                last = epoch + 1 == epochs
            row = {"epoch": epoch + 1, "lr": out["lr"], **{f"train_{k}": v for k, v in out["loss"].items()},
                   "num_pos": out["num_pos"], "collisions": out["collisions"], "bad_steps": out["bad_steps"],
                   "seconds": round(time.time() - t_epoch, 1)}
            if main:
                end_epoch(epoch + 1, row, (epoch + 1) % cfg.train.eval_period == 0 or last)
            if world > 1:
                dist.barrier()
            epoch += 1
            if stop["asked"] or (stop_after is not None and epoch - start_epoch >= stop_after and epoch < epochs):
                break
        if main and epoch >= epochs and not result and not stop["asked"]:
            # resumed from a run that had finished its epochs: its final weights are evaluated again
            result = _evaluate(ema.ema if ema is not None else unwrap(model), val_records, classes, spec, cfg, device,
                               loss_fn)
    except TrainingStopped as e:
        if main:
            save("last.pt", epoch)
        raise TrainingStopped(f"{e}; saved {run_dir / 'last.pt'}") from None
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if stop.get("sigchld") is not None:
            signal.signal(signal.SIGCHLD, stop["sigchld"])
        if writer is not None:
            writer.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    if main and (run_dir / "results.csv").is_file():
        from utils.plots import plot_results

        plot_results(run_dir / "results.csv", run_dir / "results.png")
    if stop["asked"] and main:
        print(f"stopped by signal {stop['asked']}; saved {run_dir / 'last.pt'} (continue with --resume)")
    final = {"run_dir": str(run_dir), "epochs": epoch, "best_map50": best[0],
             "seconds": round(elapsed_before + time.time() - t_start, 1), "stopped": bool(stop["asked"]),
             "signal": stop["asked"] or None}
    if result:
        final.update(map50=result["map50"], map50_07=result["map50_07"], map50_95=result["map50_95"],
                     classes=list(classes), train_objects=[int(n) for n in class_counts(train_records, len(classes))[0]],
                     ap50_per_class=[float(v) for v in result["voc"]["ap"]])
    if return_model:
        final["state_dict"] = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
    return final


def _evaluate(model, records, classes, spec, cfg: Config, device, loss_fn) -> dict[str, Any]:
    """The epoch's evaluation, with the global RNGs left as they were: a run resumed from the last.pt
    saved before an evaluation continues exactly as the straight run, which went through it."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return evaluate(model, records, len(classes), spec, cfg.model.input_size, cfg.eval, device, cfg.data.workers,
                        loss_fn)


def _best_fitness(path: Path) -> tuple[float, float]:
    """The best score recorded in a run's best.pt, or (-1, -inf) where there is none to read."""
    try:
        return tuple(read_checkpoint(path, ("best_fitness",), mmap=True)["best_fitness"])
    except WeightsError:
        return (-1.0, -math.inf)


def _resume_run_dir(resume: Path, cfg: Config, last_row: int, main: bool) -> Path:
    """Where a resumed run goes on: a ``last.pt``'s own folder, its results.csv cut back to the epoch
    ``last_row`` (rows of an epoch a kill interrupted go); any other checkpoint (``best.pt``, ``epochN.pt``)
    in a new folder with the rows up to ``last_row``, since its own run went on past it and keeps its
    last.pt and best.pt."""
    if resume.name == "last.pt":
        if main:
            _keep_csv_rows(resume.parent / "results.csv", resume.parent / "results.csv", last_row)
            for tmp in resume.parent.glob(".*.pt.*.tmp"):  # save_checkpoint's temporary names, left by a kill
                tmp.unlink()
        return resume.parent
    if not main:
        return Path(cfg.train.save_dir)
    run_dir = next_run_dir(cfg.train.save_dir, cfg.train.name)
    _keep_csv_rows(resume.parent / "results.csv", run_dir / "results.csv", last_row)
    print(f"resuming {resume} (after epoch {last_row}) in a new folder, {run_dir}: {resume.parent} "
          "went on past it and stays as it is")
    return run_dir


def _keep_csv_rows(src: Path, dst: Path, last_epoch: int) -> None:
    """Write the rows of ``src`` up to ``last_epoch`` to ``dst`` (atomically; nothing when ``src`` is missing)."""
    if not src.is_file():
        return
    with open(src, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("epoch", "").isdigit() and int(r["epoch"]) <= last_epoch]
    tmp = dst.with_name(f".{dst.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, dst)


def _save(path: Path, model, ema, optimizer, scaler, epoch: int, iteration: int, best, cfg: Config, classes, anchors,
          epochs: int, elapsed: float, pending_row: dict | None = None) -> None:
    save_checkpoint(path, {
        "model": unwrap(model).state_dict(), "ema": ema.ema.state_dict() if ema is not None else {},
        "ema_updates": ema.updates if ema is not None else 0, "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(), "epoch": epoch, "iteration": iteration, "best_fitness": list(best),
        "epochs": epochs, "elapsed": elapsed, "config": cfg.to_dict(), "class_names": list(classes),
        "anchors": [list(a) for a in anchors], "input_size": cfg.model.input_size, "model_name": cfg.model.name,
        "rng": _rng_state(), "pending_row": pending_row or {}})


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if k in CSV_FIELDS})
