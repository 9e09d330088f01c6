"""Optimisers and learning-rate schedules from the ``optim`` config (torch.optim, torch.optim.lr_scheduler).

An optimiser is registered as an :class:`OptimizerStrategy`: how it is built, how one step's named loss terms
become an update, and what it cannot do (several backward passes, a grad scaler, data parallelism). The engine
asks the strategy; it never compares optimiser names.

Schedules run in the loop's unit: per epoch (the CRD / mdistiller recipes adjust the learning rate once per
epoch) or per iteration (Detectron2-style recipes: milestones and a linear warm-up in iterations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.optim import lr_scheduler

from ..errors import ConfigError

SCHEDULES = ("multistep", "cosine", "constant")


@dataclass(frozen=True)
class OptimizerStrategy:
    """An optimiser as the engine sees it. ``step`` runs backward and the update for one step's terms and
    returns the summed loss; ``task_only`` names the optimiser a run with a task loss alone (a teacher) uses."""

    build: Callable[..., torch.optim.Optimizer]
    backward_passes: int = 1
    grad_scaler: bool = True  # works under a fp16 grad scaler
    data_parallel: bool = True  # works under DistributedDataParallel (one backward per step)
    task_only: str | None = None

    def refusal(self, name: str, precision: str, world_size: int = 1) -> str | None:
        """Why this optimiser cannot run under the given precision / number of processes (None: it can)."""
        if precision == "fp16" and not self.grad_scaler:
            return (f"optim.name: {name} takes {self.backward_passes} backward passes per step, which a fp16 grad "
                    f"scaler cannot; valid with {name}: trainer.precision=fp32 or bf16")
        if world_size > 1 and not self.data_parallel:
            return (f"optim.name: {name} takes {self.backward_passes} backward passes per step, which data-parallel "
                    f"training does not support; run {name} in a single process")
        return None

    def step(self, optimizer, scaler, terms: dict[str, torch.Tensor], task_terms) -> torch.Tensor:
        loss = sum(terms.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss


@dataclass(frozen=True)
class SeparateDistillationStrategy(OptimizerStrategy):
    """Task and distillation gradients reach the optimiser apart (two backward passes): the optimiser keeps a
    momentum per stream (DOT). The method must return both kinds of term."""

    backward_passes: int = 2
    grad_scaler: bool = False
    data_parallel: bool = False

    def step(self, optimizer, scaler, terms, task_terms) -> torch.Tensor:
        task = [v for k, v in terms.items() if k in task_terms]
        distill = [v for k, v in terms.items() if k not in task_terms]
        if not task or not distill:
            raise ConfigError(f"optim.name: this optimiser needs task and distillation terms; the method returns "
                              f"{', '.join(terms)}")
        optimizer.zero_grad(set_to_none=True)
        sum(distill).backward(retain_graph=True)
        optimizer.stash_distillation_grads()
        optimizer.zero_grad(set_to_none=True)
        sum(task).backward()
        optimizer.step()
        return sum(terms.values())


def _sgd(cfg, params):
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=bool(cfg.nesterov))


def _adamw(cfg, params):
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.get("betas") or (0.9, 0.999)))


def _dot(cfg, params):
    from .dot import DOT

    return DOT(params, lr=cfg.lr, momentum=cfg.momentum, delta=cfg.delta, weight_decay=cfg.weight_decay)


OPTIMIZERS: dict[str, OptimizerStrategy] = {
    "sgd": OptimizerStrategy(_sgd),
    "adamw": OptimizerStrategy(_adamw),
    "dot": SeparateDistillationStrategy(_dot, task_only="sgd"),  # DOT, Zhao et al. ICCV 2023 (engine/dot.py)
}


def strategy_of(cfg) -> OptimizerStrategy:
    try:
        return OPTIMIZERS[str(cfg.name)]
    except KeyError:
        raise ConfigError(f"optim.name: unknown optimiser '{cfg.name}'; valid: {', '.join(OPTIMIZERS)}") from None


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    return strategy_of(cfg).build(cfg, params)


def build_scheduler(cfg, optimizer, total: int, unit: str = "epoch") -> lr_scheduler.LRScheduler:
    """The schedule over ``total`` epochs or iterations (``unit``), stepped once per unit.

    Epochs: ``warmup_epochs`` of linear ramp from lr / (warmup + 1), then the main schedule with its milestones
    shifted by the warm-up (as the reference CIFAR / ImageNet recipes). Iterations: ``warmup_iters`` of linear
    ramp from ``warmup_factor`` x lr, multiplied with the main schedule (Detectron2's WarmupMultiStepLR)."""
    warmup = int((cfg.get("warmup_epochs") if unit == "epoch" else cfg.get("warmup_iters")) or 0)
    shift = warmup if unit == "epoch" else 0
    if cfg.schedule == "multistep":
        main = lr_scheduler.MultiStepLR(optimizer, milestones=[m - shift for m in cfg.milestones], gamma=cfg.gamma)
    elif cfg.schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - shift, 1))
    elif cfg.schedule == "constant":
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        raise ConfigError(f"optim.schedule: unknown schedule '{cfg.schedule}'; valid: {', '.join(SCHEDULES)}")
    if warmup <= 0:
        return main
    if unit == "epoch":
        ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
        return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=float(cfg.get("warmup_factor", 0.001)), total_iters=warmup)
    return lr_scheduler.ChainedScheduler([ramp, main])
