"""Where and how a process runs: the device, bf16 support, seeds, the distributed ranks, run folders."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

LOGGER = logging.getLogger(__name__)


class DeviceError(ValueError):
    """A device that this machine does not have."""


def select_device(name: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; a CUDA device that is not there is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name}: CUDA is not available on this machine")
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


def auto_precision(device: torch.device) -> str:
    """What ``auto`` picks, for training's autocast and for inference alike: fp16 on CUDA, bf16 on a CPU with
    bfloat16 instructions, fp32 elsewhere."""
    if device.type == "cuda":
        return "fp16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def amp_dtype(cfg_amp: str, device: torch.device) -> torch.dtype | None:
    """``train.amp``: ``auto`` as :func:`auto_precision` picks (None: float32, no autocast); ``fp16`` / ``bf16`` /
    ``off`` as named."""
    if cfg_amp == "bf16":
        warn_if_bf16_emulated(device, "train.amp=bf16")
    name = auto_precision(device) if cfg_amp == "auto" else cfg_amp
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None, "off": None}[name]


def inference_precision(precision: str, device: torch.device) -> str:
    """``--precision``: ``auto`` as :func:`auto_precision` picks; the others as named."""
    return auto_precision(device) if precision == "auto" else precision


def channels_last_on(setting: str, device: torch.device) -> bool:
    """``train.channels_last``: ``auto`` is on for the CPU, where bench_train measured it faster for
    these convolutions in float32 and bfloat16; ``on`` / ``off`` as named."""
    return device.type == "cpu" if setting == "auto" else setting == "on"


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16`` / ``fp16`` / ``fp32`` for an autocast dtype (None: no autocast)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel, or the model itself."""
    return model.module if hasattr(model, "module") else model


def next_run_dir(parent: str | Path, name: str = "exp") -> Path:
    """Make and return ``parent/name``, else ``name2``, ``name3``, ...: a run never overwrites another."""
    parent = Path(parent)
    for i in range(1, 10_000):
        d = parent / (name if i == 1 else f"{name}{i}")
        if not d.exists():
            d.mkdir(parents=True)
            return d
    raise RuntimeError(f"no free run directory under {parent}")
