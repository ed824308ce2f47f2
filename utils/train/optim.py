"""The optimizer, the learning-rate schedule with its warmup, backbone freezing, and the epoch count
that fits a time budget."""

from __future__ import annotations

import statistics

import torch

from utils.runtime import unwrap


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


def phase_lr(cfg, batch: int, world: int) -> tuple[int, float]:
    """``(accumulate, base_lr)`` for a phase of ``batch`` images per step and rank (``cfg``: TrainConfig): with
    ``accumulate`` on, gradients add up over about ``nominal_batch`` images and the lr is ``lr``; with it off,
    every batch steps and the lr scales with the batch against the nominal one."""
    if cfg.accumulate:
        return max(round(cfg.nominal_batch / (batch * world)), 1), cfg.lr
    return 1, cfg.lr * batch * world / cfg.nominal_batch


def epoch_lr(optimizer: torch.optim.Optimizer, cfg, span: tuple[float, float], batches: int, start_iter: int,
             warmup_iters: int, base_lr: float):
    """``lr_at(i)``: :func:`set_lr` for the epoch's ``i``-th of ``batches`` batches, the schedule's progress going
    linearly from ``span[0]`` to ``span[1]``, the warmup counted from the run's first iteration."""
    def lr_at(i: int) -> float:
        return set_lr(optimizer, cfg, span[0] + (span[1] - span[0]) * i / batches, start_iter + i, warmup_iters,
                      base_lr)

    return lr_at


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


def epochs_in_budget(limit_s: float, elapsed_s: float, per_epoch_s: float, per_eval_s: float, eval_period: int,
                     done: int, most: int) -> int:
    """How many epochs a run with ``train.time_limit`` (``limit_s``) plans, after ``done`` of them took
    ``elapsed_s``: the epochs whose training and share of evaluations (one every ``eval_period``) fit in what
    is left once the final evaluation is set aside; at least ``done``, at most ``most``."""
    left = limit_s - elapsed_s - per_eval_s
    return max(done, min(done + int(left // (per_epoch_s + per_eval_s / eval_period)), most))


def steady_seconds(seconds: list[float], recent: int = 3) -> float:
    """What an epoch (or an evaluation) costs now: the median of the last ``recent`` ones, the first set aside
    once there are others (its one-off costs: the image cache, oneDNN's first calls, a machine busy at the start)."""
    steady = seconds[1:] or seconds
    return statistics.median(steady[-recent:])
