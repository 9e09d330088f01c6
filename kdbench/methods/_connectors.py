"""Shared parts of feature-based methods: connectors sized from sample shapes, and full-precision loss calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


class ConvRegressor(nn.Module):
    """FitNet's convolutional regressor: conv (or transposed conv) -> BatchNorm -> optional ReLU.

    The convolution is chosen from the spatial sizes, as mdistiller ``distillers/_common.py`` ``ConvReg`` (and
    RepDistiller ``models/util.py`` ``ConvReg``): student height twice the teacher's -> 3x3 conv, stride 2,
    padding 1; half the teacher's -> 4x4 transposed conv, stride 2, padding 1; otherwise (student at least as
    large) -> a valid conv of kernel ``(1 + H_S - H_T, 1 + W_S - W_T)`` (1x1 for equal sizes). A student map
    smaller than the teacher's by another factor has no regressor in the references and is refused.

    ``student_shape`` and ``teacher_shape`` are map shapes, ``(B, C, H, W)`` or ``(C, H, W)``.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int], use_relu: bool = True):
        super().__init__()
        s_c, s_h, s_w = tuple(student_shape)[-3:]
        t_c, t_h, t_w = tuple(teacher_shape)[-3:]
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ConfigError(f"no convolutional regressor maps a {s_h}x{s_w} student map onto a {t_h}x{t_w} "
                              "teacher map (the student map must be half, equal to, or larger than the teacher's)")
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = nn.ReLU(inplace=True) if use_relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _to_float32(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_to_float32(v) for v in x]
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.element_size() < 4:
        return x.float()
    return x


def _device_type(values: Sequence[Any]) -> str | None:
    for v in values:
        found = _device_type(v) if isinstance(v, (list, tuple)) else getattr(v, "device", None)
        if found is not None:
            return found if isinstance(found, str) else found.type
    return None


def in_float32(loss: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
    """``loss(*args, **kwargs)`` with autocast off and half-precision tensors (also inside lists) cast to float32.

    Gram matrices, pairwise distances and normalised similarities lose most of their digits in bf16/fp16; the
    references compute them in float32. float32 and float64 inputs pass through unchanged.
    """
    with torch.autocast(_device_type([*args, *kwargs.values()]) or "cpu", enabled=False):
        return loss(*map(_to_float32, args), **{k: _to_float32(v) for k, v in kwargs.items()})


def paired_stages(student, teacher) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The last ``min(len)`` stage maps of student and teacher, paired level by level from the deepest (a detector's
    FPN p2-p6 on both sides; a classifier's last stages where the depths differ)."""
    levels = min(len(student.stages), len(teacher.stages))
    return list(student.stages[-levels:]), list(teacher.stages[-levels:])
