"""The task interface the engine's phases call, and the model-running helpers every task shares."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..models.outputs import ModelOutput, run_model


@dataclass(frozen=True)
class Metric:
    name: str  # key in each history entry, e.g. "top1"; result.json keeps last_<name> and best_<name>
    label: str  # column heading in tables and logs
    higher_is_better: bool = True


def forward_outputs(model, batch, method, role: str = "student") -> ModelOutput:
    """The model's outputs on ``batch.images`` for what the method declares for ``role``, and on each extra
    view the method asked for."""
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


class Task:
    """A task: ``metrics[0]`` is the primary metric (best checkpoint, best epoch, leaderboard ranking).
    ``loss_names``: the terms its models compute themselves (task losses beside the method's own task terms).
    Built from the dataset config (``dataset``)."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]
    loss_names: ClassVar[frozenset[str]] = frozenset()
    ensemble_teachers: ClassVar[bool] = False  # whether its models' logits can be combined over teachers

    def __init__(self, dataset_cfg=None):
        self.dataset_cfg = dataset_cfg

    @property
    def primary(self) -> Metric:
        return self.metrics[0]

    # -- models -------------------------------------------------------------------------------------------------
    def create_model(self, name: str, num_classes: int, image_size: int, pretrained: bool = False,
                     role: str = "student") -> torch.nn.Module:
        raise NotImplementedError

    def refusal(self, model: torch.nn.Module, method, role: str) -> str | None:
        """Why ``model`` cannot serve ``method`` as ``role`` on this task (None: it can)."""
        raise NotImplementedError

    # -- data ---------------------------------------------------------------------------------------------------
    def loaders(self, cfg, data, world, batch_per_rank: int, device, views: dict, channels_last: bool):
        """(train loader, its sampler, test loader, loader kind): both loaders yield this task's batch type on the
        device; the sampler has ``per_rank`` and ``set_epoch(epoch, start)`` (the loop's seeded order)."""
        raise NotImplementedError

    def test_loader(self, cfg, data, device, world=None, channels_last: bool = False):
        raise NotImplementedError

    def split_training(self, data, method):
        """``data`` with the training set split as ``dataset.validation_fraction`` / ``labelled_fraction`` and the
        method ask (kdbench/data/splits.py); a task without such splits refuses them when asked."""
        cfg = self.dataset_cfg or {}
        for key, unsplit in (("validation_fraction", ("auto", 0, None)), ("labelled_fraction", (1, None))):
            if cfg.get(key, unsplit[0]) not in unsplit:
                raise ConfigError(f"dataset.{key}: the {self.name} task does not split its training set")
        if method.needs_validation or method.uses_unlabelled:
            raise ConfigError(f"method needs a validation split or an unlabelled pool, which the {self.name} task "
                              "does not provide")
        return data

    def training_labels(self, data) -> torch.Tensor:
        """(N,) int64 labels of the training samples in index order, for methods that need them (CRD's negative
        sampler); empty where samples have no single label."""
        raise NotImplementedError

    # -- the step -----------------------------------------------------------------------------------------------
    def forward_student(self, model, batch, method) -> tuple[ModelOutput, Any, dict[str, torch.Tensor]]:
        """(the student's outputs for the method, the batch the method scores them against, the losses the model
        computes itself, by name)."""
        return forward_outputs(model, batch, method), batch, {}

    def forward_teacher(self, model, batch, student_out: ModelOutput, method) -> ModelOutput:
        """The frozen teacher's outputs (gradients off), paired with the student's where the task needs it."""
        return forward_outputs(model, batch, method, role="teacher")

    def sample_outputs(self, student, teacher, loader, method) -> tuple[ModelOutput, ModelOutput | None]:
        """Sample outputs of the actual pair, for sizing the method's trainable parts (the student's BN and
        running state are left as they were)."""
        raise NotImplementedError

    # -- scoring ------------------------------------------------------------------------------------------------
    def evaluate(self, model, loader, device, precision: str, num_classes: int, sharded: bool = False,
                 out_dir=None) -> dict[str, float]:
        """Every metric of ``metrics`` on the test loader, in percent; ``sharded``: summed over the process group;
        ``out_dir``: where a task writes the evaluation's own files (the final evaluation of a run)."""
        raise NotImplementedError

    def is_better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.primary.higher_is_better else value < best

    def summarize(self, history: list[dict]) -> dict[str, Any]:
        """result.json's ``metrics``: ``best_<m>``, ``best_epoch`` and ``last_<m>`` of every metric (best: the
        entry with the best primary metric, the earliest on ties)."""
        names = [m.name for m in self.metrics]
        if not history:
            return {**{f"best_{n}": None for n in names}, "best_epoch": None, **{f"last_{n}": None for n in names}}
        sign = 1 if self.primary.higher_is_better else -1
        best = max(history, key=lambda h: (sign * h[self.primary.name], -h["epoch"]))
        return {**{f"best_{n}": best[n] for n in names}, "best_epoch": best["epoch"],
                **{f"last_{n}": history[-1][n] for n in names}}
