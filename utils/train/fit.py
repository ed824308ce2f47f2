"""The training run (train.py calls :func:`fit`): setup, resume, the epoch loop, the time budget,
the end of each epoch. Distributed runs start with ``torchrun``; rank 0 alone writes files, logs and evaluates."""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nets.loss import YOLOLoss
from nets.weights import load_weights, read_checkpoint
from nets.yolo import build_model, model_summary
from utils.config.files import read_anchors, read_classes
from utils.config.load import config_from_dict, save_config
from utils.config.schema import Config
from utils.data.augment import AugmentParams
from utils.data.dataset import TrainDataset, build_train_loader
from utils.data.records import class_counts
from utils.data.splits import load_records
from utils.data.synthetic import ensure_shapes
from utils.infer.postprocess import DecodeSpec
from utils.runtime import amp_dtype, dist_info, next_run_dir, seed_everything, select_device, unwrap
from utils.train.checkpoint import RESUME_KEYS, save_run, set_rng_state
from utils.train.ema import ModelEMA
from utils.train.engine import TrainingStopped, evaluate, train_one_epoch
from utils.train.optim import build_optimizer, freeze_backbone, train_mode
from utils.train.results import append_row
from utils.train.resume import ResumeError, best_fitness_in, check_resume_changes, dotted, resume_run_dir

LOGGER = logging.getLogger(__name__)


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
            print(f"resume: {', '.join(changed)} changed ({', '.join(f'{k} = {dotted(cfg, k)!r}' for k in changed)})")

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
        set_rng_state(ckpt["rng"])
        # the rows the run keeps: those of the epochs done, less one whose evaluation a kill cut (it runs again)
        run_dir = resume_run_dir(Path(resume), cfg, start_epoch - bool(ckpt.get("pending_row")), main)
        if run_dir == Path(resume).parent:  # the best score may be newer in best.pt (a kill between the two saves)
            best = max(best, best_fitness_in(run_dir / "best.pt"))
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
        if main and len(dataset) < b * world:  # the loader keeps the one partial batch (utils.data.dataset.build_train_loader)
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
        save_run(run_dir / name, model, ema, optimizer, scaler, next_epoch, iteration, best, cfg, classes, anchors, epochs,
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
        append_row(run_dir / "results.csv", row)
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


