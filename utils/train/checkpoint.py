"""The checkpoint: the one schema a run writes (:func:`run_checkpoint`), its durable write, and
the RNG state it carries."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nets.darknet import looks_like_darknet
from nets.weights import WeightsError, checkpoint_state_dict, load_weights, read_checkpoint
from nets.yolo import YOLO, build_model
from utils.config.files import read_anchors, read_classes
from utils.config.load import apply_overrides, config_from_dict, load_config
from utils.config.schema import Config
from utils.runtime import unwrap

RESUME_KEYS = ("model", "optimizer", "scaler", "epoch", "iteration", "best_fitness", "config", "class_names", "anchors",
               "model_name", "rng")  # what a checkpoint must hold to be resumed (train.py writes them all)


class CheckpointError(OSError):
    """A checkpoint could not be written; the previous file of that name is unchanged."""


def save_run(path: Path, model, ema, optimizer, scaler, epoch: int, iteration: int, best, cfg: Config, classes, anchors,
          epochs: int, elapsed: float, pending_row: dict | None = None) -> None:
    save_checkpoint(path, {
        "model": unwrap(model).state_dict(), "ema": ema.ema.state_dict() if ema is not None else {},
        "ema_updates": ema.updates if ema is not None else 0, "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(), "epoch": epoch, "iteration": iteration, "best_fitness": list(best),
        "epochs": epochs, "elapsed": elapsed, "config": cfg.to_dict(), "class_names": list(classes),
        "anchors": [list(a) for a in anchors], "input_size": cfg.model.input_size, "model_name": cfg.model.name,
        "rng": rng_state(), "pending_row": pending_row or {}})


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
