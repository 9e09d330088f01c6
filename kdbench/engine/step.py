"""One training step, the only one: the trainer, ``kdbench-bench`` and the tests all run this code.

    batch -> method.prepare -> teacher outputs (frozen forward, or the teacher-logit cache) and student outputs,
    each for what the method declares -> the method's named terms -> backward + update by the optimiser strategy,
    under the precision policy (autocast; a grad scaler for fp16).
"""

from __future__ import annotations

import contextlib

import torch

from ..data.batch import Batch
from ..methods import Method, Progress
from ..models import ModelOutput, run_model
from .optim import OptimizerStrategy
from .runtime import autocast


def forward_outputs(model, batch: Batch, method: Method, role: str = "student") -> ModelOutput:
    """The model's outputs on the batch, and on each extra view the method asked for."""
    needs = method.needs_of(role)
    with batch_statistics(model, role == "teacher" and method.teacher_batch_stats):
        out = run_model(model, batch.images, needs)
        for name in method.views:
            out.views[name] = run_model(model, batch.views[name], needs)
    return out


@contextlib.contextmanager
def batch_statistics(model: torch.nn.Module, enabled: bool = True):
    """Within the block, the model's BN layers normalise with each batch's own statistics (train-mode BN)
    while their running statistics and counters stay exactly as they were."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] if enabled else []
    saved = [(m.training, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in norms]
    for m in norms:
        m.train()
        m.momentum = 0.0  # running <- (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, (training, momentum, count) in zip(norms, saved):
            m.train(training)
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


class StudentStep(torch.nn.Module):
    """Everything trained, as one module: the student and the method's parts. Its forward is one step's loss
    terms, so data parallelism wraps it whole (gradients of connectors and projectors are synchronised too)."""

    def __init__(self, student, method, compiled=None):
        super().__init__()
        self.student, self.method = student, method
        # the compiled student shares the student's parameters: kept out of the module tree (no second copy of
        # its keys, no len() on the compiled wrapper)
        self.__dict__["_forward_student"] = compiled if compiled is not None else student

    def forward(self, batch: Batch, teacher_outputs, progress: Progress) -> dict[str, torch.Tensor]:
        """The student's outputs, then the teacher's (``teacher_outputs(batch, student_out)``), then the method's
        terms."""
        student_out = forward_outputs(self._forward_student, batch, self.method)
        return self.method(student_out, teacher_outputs(batch, student_out), batch, progress)


class TrainStep:
    """One optimiser step of a student under a method: ``loss, terms = step(batch, progress)``.

    ``teacher``: the frozen teacher (eval mode, no grad) or None; ``logit_cache``: a teacher-logit cache that
    replaces the teacher's forward (its rows are looked up by ``batch.index`` and ``batch.view_ids``).
    ``compile``: torch.compile the student forward and the online teacher forward. ``data_parallel``: wrap the
    trained module in DistributedDataParallel (the process group is initialised).
    """

    def __init__(self, student: torch.nn.Module, method: Method, optimizer: torch.optim.Optimizer,
                 strategy: OptimizerStrategy, device: torch.device, teacher: torch.nn.Module | None = None,
                 logit_cache=None, precision: str = "fp32", compile: bool = False, data_parallel: bool = False):
        self.student, self.method, self.teacher, self.logit_cache = student, method, teacher, logit_cache
        self.optimizer, self.strategy, self.device, self.precision = optimizer, strategy, device, precision
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.module = StudentStep(student, method, torch.compile(student) if compile else None)
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
            return forward_outputs(self.teacher_forward, batch, self.method, role="teacher")

    def __call__(self, batch: Batch, progress: Progress) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = self.method.prepare(batch, progress)
        with autocast(self.precision, self.device):
            terms = self.module(batch, self.teacher_outputs, progress)
        loss = self.strategy.step(self.optimizer, self.scaler, terms, self.method.task_terms)
        return loss, terms
