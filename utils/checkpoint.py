"""The checkpoint: one schema, written by :func:`save_run` and read by :func:`read_run`, nowhere else.

A checkpoint (``last.pt``, ``best.pt``, ``epochN.pt``) is a dict of two parts:

- the :class:`ModelCard`: what a trained model needs besides its weights (model name, class names,
  anchors, input size, the run's config). An ONNX graph from export.py carries the same card in
  its metadata, so resume, eval, predict and export all read it through :meth:`ModelCard.from_dict`;
- the :class:`TrainingState`: weights, EMA, optimizer, AMP scaler, progress, RNG states, and the
  row of an epoch whose evaluation a kill cut short. Only resume needs it.

A run that ends strips its ``best.pt`` (and its ``last.pt``, unless ``train.keep_last_state``) to what
inference needs (:func:`strip_run`): the card, the weights evaluation used (the EMA's) and a few numbers
(``epoch``, ``best_fitness``), marked ``stripped``. Such a file predicts, evaluates, exports and starts
a new run (``model.weights``); resuming it is a WeightsError that says why it cannot.

Files are written durably (:func:`save_checkpoint`) and read with ``weights_only=True`` through
``nets.weights.read_checkpoint``, whose errors name the file for every way a file can be unusable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nets.darknet import PUBLISHED
from nets.weights import WeightsError, checkpoint_state_dict, read_checkpoint
from utils.config.files import resolve_path
from utils.config.load import apply_overrides, config_from_dict, load_config
from utils.config.schema import Config


class CheckpointError(OSError):
    """A checkpoint could not be written; the previous file of that name is unchanged."""


@dataclass
class ModelCard:
    """What a trained model needs besides its weights; the keys of a checkpoint and of an ONNX graph's metadata."""

    model_name: str
    class_names: list[str]
    anchors: list[tuple[float, float]]
    input_size: int
    config: dict[str, Any]  # the run's config, as Config.to_dict() writes it

    @classmethod
    def of(cls, cfg: Config, class_names: Sequence[str], anchors: Sequence[Sequence[float]]) -> ModelCard:
        return cls(cfg.model.name, list(class_names), [tuple(map(float, a)) for a in anchors], cfg.model.input_size,
                   cfg.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "class_names": list(self.class_names),
                "anchors": [list(a) for a in self.anchors], "input_size": self.input_size, "config": self.config}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | Path) -> ModelCard:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d]
        if missing:
            raise WeightsError(f"{source}: not a checkpoint written by train.py (no {', '.join(missing)})")
        return cls(str(d["model_name"]), [str(n) for n in d["class_names"]], [tuple(map(float, a)) for a in d["anchors"]],
                   int(d["input_size"]), dict(d["config"]))

    def run_config(self, config: str | Path | None = None, overrides: Sequence[str] = (), source: str = "") -> Config:
        """The config to use the model with: the file ``config`` if given, else the card's own; then ``overrides``.
        The card's config is type-checked key by key, not validated: its file paths may belong to another machine."""
        if config:
            return load_config(config, overrides)
        return apply_overrides(config_from_dict(self.config, source), overrides)


@dataclass
class TrainingState:
    """What resuming a run needs besides its card (checkpoints from before a field was added read its default)."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    epoch: int  # epochs done: the run goes on with this (0-based) epoch
    iteration: int  # optimizer iterations done (the warmup and the lr schedule count them)
    best_fitness: tuple[float, float]  # (mAP50, -val loss) of best.pt (a list in the file)
    rng: dict[str, Any]  # rng_state()
    ema: dict[str, torch.Tensor] = field(default_factory=dict)
    ema_updates: int = 0
    epochs: int = 0  # the planned epoch count (the time budget changes it); 0: the config's
    elapsed: float = 0.0  # seconds trained before this save
    pending_row: dict[str, Any] = field(default_factory=dict)  # an epoch's results row whose evaluation is still due
    best_epoch: int = 0  # the (1-based) epoch of best.pt (train.patience counts from it)


STATE_REQUIRED = tuple(f.name for f in dataclasses.fields(TrainingState) if f.default is dataclasses.MISSING
                       and f.default_factory is dataclasses.MISSING)


@dataclass
class RunCheckpoint:
    card: ModelCard
    weights: dict[str, torch.Tensor]  # the weights to evaluate: the EMA's where there is one
    state: TrainingState | None  # read where resume=True


def save_run(path: Path, card: ModelCard, state: TrainingState) -> Path:
    """Write a run's checkpoint (the only place that does)."""
    return save_checkpoint(path, {**card.to_dict(), **{f.name: getattr(state, f.name) for f in dataclasses.fields(state)}})


def read_run(path: str | Path, resume: bool = False, mmap: bool = False) -> RunCheckpoint:
    """Read a checkpoint written by :func:`save_run` or :func:`save_model` (the only places that write one); a
    WeightsError names the file and what is wrong. ``resume``: also its TrainingState (a stripped file has
    none); ``mmap``: map the tensors rather than read them."""
    ckpt = read_checkpoint(path, mmap=mmap)
    if resume:
        check_resumable(ckpt, path)
    card = ModelCard.from_dict(ckpt, path)
    state = None
    if resume:
        state = TrainingState(**{k: v for k, v in ckpt.items() if k in {f.name for f in dataclasses.fields(TrainingState)}})
        state.best_fitness = tuple(state.best_fitness)
    return RunCheckpoint(card, checkpoint_state_dict(ckpt, path), state)


def check_resumable(ckpt: dict[str, Any], path: str | Path) -> None:
    """A WeightsError saying why ``ckpt`` cannot be resumed: stripped at its run's end, or without a training state."""
    if ckpt.get("stripped"):
        raise WeightsError(f"{path} cannot be resumed: its run ended and the file was stripped for inference "
                           "(the weights and the card, without the optimizer's state). Start a new run from it "
                           f"with model.weights={path}; to keep a run's last.pt resumable after its end, set "
                           "train.keep_last_state=true")
    missing = [k for k in STATE_REQUIRED if k not in ckpt]
    if missing:
        raise WeightsError(f"{path}: not a checkpoint written by train.py (no {', '.join(missing)})")


def strip_run(path: str | Path) -> tuple[int, int]:
    """Rewrite the checkpoint ``path`` of a run that ended for shipping: its card, the weights evaluation used
    (the EMA's where there is one) as ``model``, in the precision they were trained in, the epochs done and
    the best score, marked ``stripped``; no optimizer, scaler, RNG or raw weights. Written durably like every
    save. Returns the file's size before and after, in bytes (the same where it was stripped already)."""
    path = Path(path)
    before = path.stat().st_size
    ckpt = read_checkpoint(path)
    if ckpt.get("stripped"):
        return before, before
    kept = {k: ckpt[k] for k in ("epoch", "best_fitness", "best_epoch") if k in ckpt}
    save_model(path, ModelCard.from_dict(ckpt, path), checkpoint_state_dict(ckpt, path), **kept)
    return before, path.stat().st_size


def save_model(path: str | Path, card: ModelCard, weights: dict[str, torch.Tensor], **extra: Any) -> Path:
    """Write a checkpoint for inference: the card and ``weights`` as ``model``, marked ``stripped`` (it cannot be
    resumed), with ``extra`` small entries beside them (strip_run keeps the epochs done and the best score)."""
    return save_checkpoint(path, {**card.to_dict(), "model": weights, "stripped": True, **extra})


def check_start_weights(cfg: Config) -> None:
    """``model.weights`` of a new run, before any work: where it is missing, one WeightsError that names the
    file, where a published one comes from, its size, and how to train from scratch instead."""
    path = cfg.model.weights
    if not path or resolve_path(path).is_file():
        return
    known = PUBLISHED.get(Path(path).name)
    origin = f" It is published on {known.where} ({known.size:,} bytes)." if known else ""
    raise WeightsError(f"model.weights = {path}: file not found.{origin} Put it there, or train from scratch "
                       "with model.weights='' (slower to converge; the backbone then is not frozen).")


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


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                                                      int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
