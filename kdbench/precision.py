"""Numeric precision of a run: ``trainer.precision`` (fp32, bf16, fp16) as an autocast context. A leaf module:
the engine, the tasks' evaluators and the benchmark all use it."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
