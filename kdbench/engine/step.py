"""One training step, the only one: the trainer, ``kdbench-bench`` and the tests all run this code.

    batch -> method.prepare -> the student's outputs, then the frozen teacher's (or the teacher-logit cache's),
    each for what the method declares and as the task runs its models -> the method's named terms, beside the
    losses a task's model computes itself -> backward + update by the optimiser strategy, under the precision
    policy (autocast; a grad scaler for fp16).
"""

from __future__ import annotations

import torch

from ..data.batch import Batch
from ..methods import Method, Progress
from ..models import ModelOutput
from ..tasks import Task, task_of
from .optim import OptimizerStrategy
from .runtime import autocast


class StudentStep(torch.nn.Module):
    """Everything trained, as one module: the student and the method's parts. Its forward is one step's loss
    terms, so data parallelism wraps it whole (gradients of connectors and projectors are synchronised too)."""

    def __init__(self, student, method, task: Task, compiled=None):
        super().__init__()
        self.student, self.method = student, method
        self.__dict__["task"] = task
        # the compiled student shares the student's parameters: kept out of the module tree (no second copy of
        # its keys, no len() on the compiled wrapper)
        self.__dict__["_forward_student"] = compiled if compiled is not None else student

    def forward(self, batch: Batch, teacher_outputs, progress: Progress) -> dict[str, torch.Tensor]:
        """The student's outputs, then the teacher's (``teacher_outputs(batch, student_out)``), then the task's own
        losses and the method's terms."""
        student_out, scored, task_losses = self.task.forward_student(self._forward_student, batch, self.method)
        terms = self.method(student_out, teacher_outputs(batch, student_out), scored, progress)
        return {**task_losses, **terms}


class TrainStep:
    """One optimiser step of a student under a method: ``loss, terms = step(batch, progress)``.

    ``teacher``: the frozen teacher (eval mode, no grad) or None; ``logit_cache``: a teacher-logit cache that
    replaces the teacher's forward (its rows are looked up by ``batch.index`` and ``batch.view_ids``).
    ``compile``: torch.compile the student forward and the online teacher forward. ``data_parallel``: wrap the
    trained module in DistributedDataParallel (the process group is initialised). ``task``: how the models run
    (default: the default dataset's task).
    """

    def __init__(self, student: torch.nn.Module, method: Method, optimizer: torch.optim.Optimizer,
                 strategy: OptimizerStrategy, device: torch.device, teacher: torch.nn.Module | None = None,
                 logit_cache=None, precision: str = "fp32", compile: bool = False, data_parallel: bool = False,
                 task: Task | None = None):
        self.student, self.method, self.teacher, self.logit_cache = student, method, teacher, logit_cache
        self.task = task if task is not None else task_of({})
        self.task_terms = frozenset(method.task_terms) | self.task.loss_names
        self.optimizer, self.strategy, self.device, self.precision = optimizer, strategy, device, precision
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.module = StudentStep(student, method, self.task, torch.compile(student) if compile else None)
        self.teacher_forward = torch.compile(teacher) if compile and teacher is not None and logit_cache is None else teacher
        if data_parallel:
            from torch.nn.parallel import DistributedDataParallel

            # Buffers stay per rank during training (memory banks, BN running statistics); the student's BN
            # statistics are taken from rank 0 before each evaluation and checkpoint.
            self.module = DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
                find_unused_parameters=any(True for _ in method.parameters()))

    def train(self) -> None:
        self.module.train()

    def teacher_outputs(self, batch: Batch, student_out: ModelOutput | None = None) -> ModelOutput | None:
        """The frozen teacher's outputs for the batch (``student_out``: what the student gave on it)."""
        if self.logit_cache is not None:
            return ModelOutput(logits=self.logit_cache.lookup(batch.index, batch.view_ids))
        if self.teacher is None:
            return None
        with torch.no_grad():
            return self.task.forward_teacher(self.teacher_forward, batch, student_out, self.method)

    def __call__(self, batch: Batch, progress: Progress) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = self.method.prepare(batch, progress)
        with autocast(self.precision, self.device):
            terms = self.module(batch, self.teacher_outputs, progress)
        loss = self.strategy.step(self.optimizer, self.scaler, terms, self.task_terms)
        return loss, terms
