"""What every method is: a small nn.Module that turns model outputs into named, weighted loss terms.

A method declares ``needs`` (what it wants from the student and teacher: ``logits``, ``embedding``,
``stages``, ``preact``) and ``uses_teacher``; the engine computes exactly that and sums the returned terms.
Trainable parts (connectors, projectors) are created in ``build`` from sample outputs of the actual pair,
so they never depend on hard-coded channel tables; they train with the student and live in checkpoints.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from ..models.outputs import ModelOutput


@dataclass
class Batch:
    images: torch.Tensor
    targets: torch.Tensor
    index: torch.Tensor


@dataclass
class Progress:
    epoch: int  # 1-based, as mdistiller counts epochs for warm-ups
    epochs: int
    step: int  # global optimiser step, 0-based
    steps_per_epoch: int


class Method(nn.Module):
    needs: ClassVar[frozenset[str]] = frozenset({"logits"})
    uses_teacher: ClassVar[bool] = True

    def build(self, student: ModelOutput, teacher: ModelOutput | None) -> None:
        """Create trainable parts from sample outputs of the actual student/teacher pair (default: none)."""

    def hparams(self) -> dict:
        """The method's hyper-parameters, as recorded in result.json: the constructor's arguments, read back
        from the attributes of the same names (so every method stores each argument under its own name)."""
        params = inspect.signature(type(self).__init__).parameters.values()
        names = [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return {n: getattr(self, n) for n in names}

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch, progress: Progress) -> dict[str, torch.Tensor]:
        raise NotImplementedError


METHODS: dict[str, type[Method]] = {}


def register_method(name: str):
    def add(cls: type[Method]) -> type[Method]:
        METHODS[name] = cls
        cls.method_name = name
        return cls

    return add
