"""DOT, the distillation-oriented trainer (Zhao et al., ICCV 2023): SGD whose task-loss and distillation-loss
gradients keep separate momentum buffers, the distillation one with larger momentum.

With base momentum m and DOT's delta: m_task = m - delta, m_kd = m + delta (mdistiller engine/trainer.py DOT,
configs/cifar100/dot/*: m 0.9, delta 0.075). Per step, for each parameter p with task gradient g_t and/or
distillation gradient g_k (weight decay wd, learning rate lr):

    task:  d = g_t + wd * p;  b_t = d on the first step, else b_t <- mu_t * b_t + d;  p <- p - lr * b_t
    kd:    b_k = g_k on the first step, else b_k <- mu_k * b_k + g_k';  p <- p - lr * b_k

where mu_t = m_task and mu_k = m_kd for parameters that receive both gradients, and a parameter reached by only
one of the two losses uses (m_task + m_kd) / 2 for its buffer, and takes weight decay in that stream
(g_k' = g_k + wd * p; g_k' = g_k otherwise). The update order, the first-step rule (the buffer starts as the raw
gradient, so a distillation-only parameter gets no weight decay on its first step) follow mdistiller's
engine/dot.py exactly.

Protocol (``engine.optim.SeparateDistillationStrategy`` drives it for any method that returns task and
distillation terms):
``zero_grad(); distill.backward(retain_graph=True); stash_distillation_grads(); zero_grad(); task.backward();
step()``.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class DOT(Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, delta: float = 0.075, weight_decay: float = 0.0):
        if not 0.0 <= delta <= momentum:
            raise ValueError(f"delta must be in [0, momentum], got {delta}")
        defaults = dict(lr=lr, momentum=momentum, delta=delta, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self._distill_grads: dict[torch.Tensor, torch.Tensor] = {}

    @torch.no_grad()
    def stash_distillation_grads(self) -> None:
        """Keep the current gradients as the distillation gradients of this step."""
        self._distill_grads = {p: p.grad.detach().clone() for g in self.param_groups for p in g["params"]
                               if p.grad is not None}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distill = self._distill_grads
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            m_task, m_kd = group["momentum"] - group["delta"], group["momentum"] + group["delta"]
            m_one = (m_task + m_kd) / 2.0
            task_params = [p for p in group["params"] if p.grad is not None]
            task_set = set(task_params)
            for p in task_params:
                d = p.grad.add(p, alpha=wd) if wd != 0 else p.grad
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d.detach().clone()
                else:
                    buf.mul_(m_task if p in distill else m_one).add_(d)
                p.add_(buf, alpha=-lr)
            for p in group["params"]:
                if p not in distill:
                    continue
                g = distill[p]
                state = self.state[p]
                buf = state.get("momentum_kd_buffer")
                if buf is None:
                    buf = state["momentum_kd_buffer"] = g.clone()
                elif p in task_set:
                    buf.mul_(m_kd).add_(g)
                else:
                    buf.mul_(m_one).add_(g.add(p, alpha=wd) if wd != 0 else g)
                p.add_(buf, alpha=-lr)
        self._distill_grads = {}
        return loss
