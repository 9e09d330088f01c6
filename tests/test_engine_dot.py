"""DOT optimiser: pinned to mdistiller's DistillationOrientedTrainer, and driven by the engine for any method."""

from __future__ import annotations

import pytest
import torch

from kdbench.engine.dot import DOT
from kdbench.engine.optim import OPTIMIZERS
from kdbench.errors import ConfigError


def _params():
    torch.manual_seed(0)
    shared = torch.nn.Parameter(torch.randn(3, 4))  # reached by both losses
    task_only = torch.nn.Parameter(torch.randn(4))
    kd_only = torch.nn.Parameter(torch.randn(2, 4))
    return [shared, task_only, kd_only]


def _losses(params, x):
    shared, task_only, kd_only = params
    h = x @ shared.t()
    return ((h.sum(1) - x @ task_only) ** 2).mean(), ((h[:, :2] - x @ kd_only.t()) ** 2).mean()


def test_dot_matches_mdistiller_reference():
    # Reference: mdistiller mdistiller/engine/dot.py (commit a08d46f10d6102bd6e3f258ca5ac880b020ea259),
    # DistillationOrientedTrainer(lr=0.05, momentum=0.825, momentum_kd=0.975, weight_decay=5e-4), four steps of
    # zero_grad / kd.backward(retain_graph) / step_kd / zero_grad / task.backward / step on this exact problem
    # (inputs from torch.Generator().manual_seed(1)); first four entries of each parameter afterwards.
    expected = [
        [0.512888491153717, 0.39537709951400757, -1.413737416267395, -0.6804227232933044],
        [-0.5324366688728333, 0.14373739063739777, -1.5409404039382935, 0.5316234230995178],
        [0.07052483409643173, 0.5286763906478882, -1.240814208984375, -0.7012866735458374],
    ]
    params = _params()
    opt = DOT(params, lr=0.05, momentum=0.9, delta=0.075, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        task, kd = _losses(params, torch.randn(5, 4, generator=g))
        OPTIMIZERS["dot"].step(opt, None, {"ce": task, "kd": kd}, {"ce"})
    for p, want in zip(params, expected):
        torch.testing.assert_close(p.detach().flatten()[:4], torch.tensor(want), rtol=0, atol=1e-6)


def test_dot_with_zero_delta_and_one_stream_is_sgd():
    """delta 0 and a single loss: plain SGD with momentum and weight decay (torch.optim.SGD)."""
    a, b = _params(), _params()
    ours = DOT(a, lr=0.1, momentum=0.9, delta=0.0, weight_decay=1e-3)
    sgd = torch.optim.SGD(b, lr=0.1, momentum=0.9, weight_decay=1e-3)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.randn(5, 4, generator=g)
        for params, opt in ((a, ours), (b, sgd)):
            opt.zero_grad()
            sum(_losses(params, x)).backward()
            opt.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_dot_needs_task_and_distillation_terms():
    params = _params()
    opt = DOT(params, lr=0.1)
    task, _ = _losses(params, torch.randn(5, 4))
    with pytest.raises(ConfigError, match="needs task and distillation terms"):
        OPTIMIZERS["dot"].step(opt, None, {"ce": task}, {"ce"})
