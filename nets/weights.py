"""Start a model from a file: a ``.pt`` checkpoint, a state_dict of the classic PyTorch port (``.pth``), or Darknet
``.weights``, told apart by content."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nets.darknet import load_darknet, looks_like_darknet

LOGGER = logging.getLogger(__name__)


class WeightsError(ValueError):
    """A weights file that cannot be used."""


def read_checkpoint(path: str | Path, required: tuple[str, ...] = (), mmap: bool = False) -> dict[str, Any]:
    """A ``.pt`` file loaded with ``weights_only=True`` (tensors, numbers, strings, lists, dicts only).

    ``mmap=True`` maps the tensors' storage instead of reading it, for a caller that wants the small
    entries only (a run's config, its best score) of a checkpoint of hundreds of MB.

    Every way a file can be unusable (missing, empty, cut short by a full disk or a kill, damaged,
    not a dict, without the ``required`` keys) is one WeightsError whose message names the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise WeightsError(f"{path}: cannot read the checkpoint: {e.strerror}") from None
    if size == 0:
        raise WeightsError(f"{path}: the checkpoint is empty (0 bytes)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001  torch raises RuntimeError, UnpicklingError, EOFError, ValueError, ...
        reason = "truncated or not a PyTorch checkpoint" if not zipfile.is_zipfile(path) else \
            (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({size:,} bytes): {reason}") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: a checkpoint must be a dict, found {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise WeightsError(f"{path}: not a checkpoint written by train.py (no {', '.join(missing)})")
    return obj


def checkpoint_state_dict(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights of a checkpoint: its ``ema`` (the weights evaluated), else ``model``, else the dict itself."""
    for key in ("ema", "model"):
        if isinstance(ckpt.get(key), dict) and ckpt[key]:
            return ckpt[key]
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt
    raise WeightsError(f"{path}: no model weights found (expected a state dict or a checkpoint with 'model' / 'ema')")


def looks_like_classic_port(state: dict[str, torch.Tensor]) -> bool:
    """A state_dict of the classic PyTorch port's ``YoloBody`` (bubbliiiing/yolov4-pytorch): its CSPDarknet53
    stem and its stride-32 head under their names."""
    return "backbone.conv1.conv.weight" in state and "yolo_head1.1.weight" in state


def from_classic_port(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The classic port's ``YoloBody`` state_dict renamed into this model's: layer by layer in Darknet's cfg order.

    That port registers its convolutions in the order of ``yolov4.cfg`` (in each CSP stage the part that
    skips the blocks before the part that goes through them; in the neck each head right after its five
    convs), which is the order :func:`nets.darknet.conv_order` traces here. Its BN layers are ``<p>.bn``
    beside ``<p>.conv``; its output convs are plain convs with a bias. An output conv of another class
    count is left out (and reported by the loader); any other mismatch of count or shape is an error.
    """
    from nets.darknet import conv_order

    theirs = [k[: -len("weight")] for k, v in state.items() if k.endswith("weight") and v.dim() == 4]
    ours = conv_order(model)
    if len(theirs) != len(ours):
        raise WeightsError(f"{source}: {len(theirs)} convolutions in the file, {len(ours)} in "
                           f"{getattr(model, 'name', 'the model')}")
    out: dict[str, torch.Tensor] = {}
    own = model.state_dict()
    names = {m: n for n, m in model.named_modules()}
    for prefix, layer in zip(theirs, ours, strict=True):
        conv_name = names[layer.conv]
        if layer.bn is None:  # an output conv: <p>.weight and <p>.bias
            pairs = [(f"{prefix}weight", f"{conv_name}.weight"), (f"{prefix}bias", f"{conv_name}.bias")]
        else:  # <p>.conv.weight and <p>.bn.*
            p, bn_name = prefix[: -len("conv.")], names[layer.bn]
            stats = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
            pairs = [(f"{prefix}weight", f"{conv_name}.weight")] + [(f"{p}bn.{k}", f"{bn_name}.{k}") for k in stats]
        for src, dst in pairs:
            if src not in state:
                raise WeightsError(f"{source}: no {src} in the file")
            if state[src].shape != own[dst].shape and not layer.is_head:
                raise WeightsError(f"{source}: {src} is {tuple(state[src].shape)}, {dst} is {tuple(own[dst].shape)}")
            out[dst] = state[src]
    return out


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
        state = checkpoint_state_dict(read_checkpoint(path), path)
        if looks_like_classic_port(state):
            state = from_classic_port(model, state, str(path))
        return load_state_dict_matching(model, state, str(path))
    if looks_like_darknet(path):
        report = load_darknet(model, path)
        return report.skipped + report.missing
    raise WeightsError(f"{path}: neither a PyTorch checkpoint (.pt) nor a Darknet .weights file")
