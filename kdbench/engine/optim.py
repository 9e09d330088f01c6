"""Optimiser and LR schedule from the ``optim`` config: torch.optim and torch.optim.lr_scheduler, stepped per epoch
(as the CRD / mdistiller recipes adjust the learning rate once per epoch)."""

from __future__ import annotations

import torch
from torch.optim import lr_scheduler

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adamw", "dot")
SCHEDULES = ("multistep", "cosine", "constant")


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=bool(cfg.nesterov))
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.get("betas", (0.9, 0.999))))
    if cfg.name == "dot":
        from .dot import DOT

        return DOT(params, lr=cfg.lr, momentum=cfg.momentum, delta=cfg.delta, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.name: unknown optimiser '{cfg.name}'; valid: {', '.join(OPTIMIZERS)}")


def build_scheduler(cfg, optimizer, epochs: int) -> lr_scheduler.LRScheduler:
    warmup = int(cfg.get("warmup_epochs", 0) or 0)
    if cfg.schedule == "multistep":
        main = lr_scheduler.MultiStepLR(optimizer, milestones=[m - warmup for m in cfg.milestones], gamma=cfg.gamma)
    elif cfg.schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs - warmup, 1))
    elif cfg.schedule == "constant":
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        raise ConfigError(f"optim.schedule: unknown schedule '{cfg.schedule}'; valid: {', '.join(SCHEDULES)}")
    if warmup <= 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
