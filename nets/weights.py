"""Start a model from a file: a ``.pt`` checkpoint or Darknet ``.weights``, told apart by content."""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nets.darknet import load_darknet, looks_like_darknet

LOGGER = logging.getLogger(__name__)


class WeightsError(ValueError):
    """A weights file that cannot be used."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A ``.pt`` file loaded with ``weights_only=True`` (tensors, numbers, strings, lists, dicts only)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint: {str(e).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: a checkpoint must be a dict, found {type(obj).__name__}")
    return obj


def checkpoint_state_dict(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights of a checkpoint: its ``ema`` (the weights evaluated), else ``model``, else the dict itself."""
    for key in ("ema", "model"):
        if isinstance(ckpt.get(key), dict) and ckpt[key]:
            return ckpt[key]
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    raise WeightsError(f"{path}: no model weights found (expected a state dict or a checkpoint with 'model' / 'ema')")


def load_state_dict_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> list[str]:
    """Load the entries whose name and shape match; return the names skipped (logged in one line).

    Entries of another shape (output convs of another class count) and names the model does
    not have are skipped; parameters the file lacks keep their initialisation.
    """
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    absent = sorted(set(own) - set(state))
    if not usable:
        raise WeightsError(f"{source}: no entry matches the model by name and shape")
    model.load_state_dict(usable, strict=False)
    if skipped:
        LOGGER.warning("%s: skipped %d entries of another shape or unknown name: %s", source, len(skipped), ", ".join(skipped))
    if absent:
        LOGGER.warning("%s: %d model entries not in the file keep their initialisation", source, len(absent))
    return skipped


def load_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a ``.pt`` checkpoint or a Darknet ``.weights`` file into ``model``; return what was skipped."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if zipfile.is_zipfile(path):  # torch.save's format since PyTorch 1.6
        return load_state_dict_matching(model, checkpoint_state_dict(read_checkpoint(path), path), str(path))
    if looks_like_darknet(path):
        report = load_darknet(model, path)
        return report.skipped + report.missing
    raise WeightsError(f"{path}: neither a PyTorch checkpoint (.pt) nor a Darknet .weights file")
