"""A training run's first half, in run order (utils/train/fit.py's :class:`~utils.train.fit.Run` goes on from
here): the config for this machine (:func:`float32_recipe`), then ranks, device and seeds, the checkpoint to
resume, the data, the model with its loss, optimizer, precision and EMA, and the state restored."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nets.box_coding import LevelSpec
from nets.loss import YOLOLoss
from nets.weights import load_weights
from nets.yolo import build_model
from utils.checkpoint import TrainingState, check_start_weights, read_run, set_rng_state
from utils.config.files import read_anchors, read_classes, resolve_path
from utils.config.load import validate, with_float32_overrides
from utils.config.schema import Config, ConfigError
from utils.data.augment import AugmentParams
from utils.data.dataset import TrainDataset
from utils.data.splits import load_records
from utils.data.synthetic import ensure_shapes
from utils.runtime import amp_dtype, auto_precision, channels_last_on, dist_info, next_run_dir, seed_everything, select_device
from utils.train.ema import ModelEMA
from utils.train.optim import build_optimizer
from utils.train.results import EpochLog
from utils.train.resume import best_fitness_in, check_resume, dotted, resume_run_dir
from utils.train.signals import StopSignals

LOGGER = logging.getLogger(__name__)


def float32_recipe(cfg: Config, overrides: Sequence[str] = ()) -> Config:
    """The config a new run trains with on this machine: ``cfg`` with ``train.float32_overrides`` applied where it
    will train in float32 on a CPU (one without bfloat16 instructions, or ``train.amp=off``), a recipe fitted to
    that pace (configs/shapes.yaml has one); then ``overrides`` (the command line's) again, so that they win.
    train.py and the API's train() call it for a new run; :func:`fit` trains the config it is given."""
    amp = cfg.train.amp
    if amp == "auto":
        amp = auto_precision(torch.device("cpu"))
    if not cfg.train.float32_overrides or amp not in ("off", "fp32") or select_device(cfg.train.device).type != "cpu":
        return cfg
    out = with_float32_overrides(cfg, overrides)  # the run's config.yaml holds the applied values
    try:
        validate(out)
    except ConfigError as e:  # the recipe does not fit what else was asked (another model's anchor count, ...)
        LOGGER.warning("train.float32_overrides not applied, they do not fit this config: %s", e)
        return cfg
    given = {o.split("=", 1)[0].strip() for o in overrides}  # the command line's keys keep its values
    applied = [o for o in cfg.train.float32_overrides if o.split("=", 1)[0].strip() not in given]
    if applied:
        LOGGER.info("float32 on this CPU: %s (train.float32_overrides)", ", ".join(applied))
    return out


class RunSetup:
    """What a run builds before its first epoch, a method per part, in the order :func:`utils.train.fit.fit`
    calls them."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.monotonic) -> None:
        """Ranks, device and seeds."""
        self.cfg, self.clock = cfg, clock
        self.rank, self.world, local_rank = dist_info()
        self.main = self.rank == 0
        self.device = select_device(cfg.train.device)
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", local_rank)
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        self.freeze_epochs = cfg.train.freeze_epochs
        if self.freeze_epochs and not cfg.model.weights:
            if self.main:
                LOGGER.warning("train.freeze_epochs = %d, but model.weights is empty: a random backbone must not be frozen, "
                               "so it trains from the first epoch", self.freeze_epochs)
            self.freeze_epochs = 0
        self.classes = read_classes(cfg.data.classes_path)
        self.anchors = read_anchors(cfg.model.anchors_path)
        self.stop = StopSignals()  # stop.asked: the signal that asked the run to stop, 0 = none
        self.log: EpochLog | None = None  # results.csv and TensorBoard (rank 0)
        self.eval_seconds: list[float] = []  # each evaluation's, this invocation
        self.train_seconds: list[float] = []  # each epoch's training (evaluation apart), this invocation
        self.planned_epochs = 0  # the epoch count train.time_limit last printed
        self.metrics: dict[str, Any] = {}  # the latest evaluation

    # ------------------------------------------------------------------ setup

    def checkpoint_to_resume(self, resume: str | Path | None) -> TrainingState | None:
        """The training state to continue from, checked against the config (resume.check_resume)."""
        if resume is None:
            check_start_weights(self.cfg)
            return None
        ckpt = read_run(resume, resume=True)
        changed = check_resume(ckpt.card, self.cfg, self.classes, self.anchors, resume)
        if changed and self.main:
            LOGGER.info("resume: %s changed (%s)", ", ".join(changed),
                        ", ".join(f"{k} = {dotted(self.cfg, k)!r}" for k in changed))
        return ckpt.state

    def load_data(self) -> None:
        """The training and validation records (the synthetic set made first where the config asks for it)."""
        cfg = self.cfg
        if self.main:
            made = ensure_shapes(cfg, self.classes)
            if made:
                LOGGER.info("made the synthetic shapes set in %s (once; reused while the shapes settings stay the same)",
                            made)
        if self.world > 1:
            dist.barrier()
        self.train_records, _ = load_records(cfg.data, cfg.data.train_splits, self.classes, write_cache=self.main)
        self.val_records, _ = load_records(cfg.data, cfg.data.val_splits, self.classes, write_cache=self.main)

    def build_model(self, starting_weights: bool) -> None:
        """Model (from ``model.weights`` where ``starting_weights``), loss, optimizer, AMP, EMA, and the decoding
        that evaluation uses."""
        cfg, device = self.cfg, self.device
        self.net = build_model(cfg.model.name, len(self.classes), cfg.model.obj_prior, cfg.model.cls_prior)
        if cfg.model.weights and starting_weights:
            load_weights(self.net, resolve_path(cfg.model.weights))  # as check_start_weights found it
        self.net.to(device)
        self.channels_last = channels_last_on(cfg.train.channels_last, device)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.loss_fn = YOLOLoss.from_config(cfg, len(self.classes), self.anchors, self.net.strides,
                                            self.net.anchor_masks).to(device)
        self.optimizer = build_optimizer(self.net, cfg.train.optimizer, cfg.train.lr, cfg.train.momentum,
                                         cfg.train.weight_decay)
        self.dtype = amp_dtype(cfg.train.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.ema = ModelEMA(self.net, cfg.train.ema_decay, cfg.train.ema_tau) if cfg.train.ema else None
        self.spec = LevelSpec.for_model(self.net, self.anchors, cfg.model.scale_x_y)
        self.model = self.net  # what runs the forward: DDP-wrapped per phase when distributed

    def restore(self, state: TrainingState | None, resume: str | Path | None) -> None:
        """Progress and weights from the checkpoint, in its folder (or a new one); a new run gets a new folder."""
        cfg = self.cfg
        self.epoch, self.iteration, self.best, self.best_epoch, self.stopped_early = 0, 0, (-1.0, -math.inf), 0, False
        self.epochs, self.elapsed_before, self.start_epoch = cfg.train.epochs, 0.0, 0
        if state is None:
            self.run_dir = next_run_dir(cfg.train.save_dir, cfg.train.name) if self.main else Path(cfg.train.save_dir)
        else:
            self.net.load_state_dict(state.model)
            self.optimizer.load_state_dict(state.optimizer)
            self.scaler.load_state_dict(state.scaler)
            if self.ema is not None and state.ema:
                self.ema.ema.load_state_dict(state.ema)
                self.ema.updates = int(state.ema_updates)
            self.epoch = self.start_epoch = int(state.epoch)
            self.iteration, self.best, self.best_epoch = int(state.iteration), state.best_fitness, int(state.best_epoch)
            self.epochs = int(state.epochs or self.epochs)
            self.elapsed_before = float(state.elapsed)
            set_rng_state(state.rng)
            # the rows the run keeps: those of the epochs done, less one whose evaluation a kill cut (it runs again)
            self.run_dir = resume_run_dir(Path(resume), cfg, self.epoch - bool(state.pending_row), self.main)
            if self.run_dir == Path(resume).parent:  # the best score may be newer in best.pt (a kill between the saves)
                self.best = max(self.best, best_fitness_in(self.run_dir / "best.pt"))
        if cfg.train.sync_bn and self.world > 1:
            self.net = self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.net)
        self.loader = None  # built by train_epoch, kept while the batch size stays the same
        self.dataset = TrainDataset(self.train_records, cfg.model.input_size, AugmentParams.from_config(cfg.data),
                                    mosaic=cfg.data.mosaic, mixup=cfg.data.mixup, close_mosaic=cfg.data.close_mosaic,
                                    epochs=self.epochs, seed=cfg.train.seed)
