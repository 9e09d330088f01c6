"""What every method is: a small nn.Module that turns model outputs into named, weighted loss terms.

A method declares what it wants and the engine computes exactly that:

- ``needs``: model outputs for student and teacher: ``logits``, ``embedding`` (pooled pre-logit vector),
  ``stages`` (stage maps), ``preact`` (pre-activation stage maps, CIFAR zoo only);
- ``teacher_needs``: what the teacher must give, when it differs from ``needs`` (None: the same);
- ``uses_teacher``: whether a frozen teacher runs at all;
- ``teacher_batch_stats``: the teacher's BN layers normalise with the batch's own statistics (as a teacher
  left in train mode does; its running statistics stay untouched), for methods whose reference runs it so;
- ``views``: extra augmented views of each training image, ``{view name: augmentation}`` (see
  ``kdbench.data.AUGMENTATIONS``); student and teacher outputs on a view are ``output.views[name]``;
- ``task_terms``: which of the returned terms are the task loss (optimisers such as DOT treat task and
  distillation gradients apart; every other term is distillation);
- ``needs_training_samples``: the method works on training samples as such: state kept per sample and keyed by
  ``batch.index`` (CRD's memory banks) or statistics of a pass over the training images (ND's teacher class
  means); tasks whose scored items are not training images (a detector's RoIs) refuse it;
- ``image_logits_from_stages``: the method turns the student's stage maps into image-level logits of its own
  and compares them with the teacher's logits (OFA's branches); tasks whose logits are not per image refuse it;
- ``uses_unlabelled``: with ``dataset.labelled_fraction < 1`` each training batch holds a labelled batch followed
  by an equal-sized batch from the unlabelled pool, whose targets are ``UNLABELLED`` (-1); other methods train on
  the labelled part alone;
- ``needs_validation``: the method selects or learns something on a validation split carved from the training
  data (``dataset.validation_fraction``; never the test set): ``BuildContext.validation_batches`` yields it, and
  ``select_on_validation`` runs on it before each evaluation;
- ``evaluation_needs``: the student is scored on ``predict(outputs)`` (class scores from the student's outputs
  and the method's own parts, e.g. a second head) instead of its plain logits; None: the plain logits.

``build`` creates trainable parts (connectors, projectors, memory banks) from sample outputs of the actual
pair and a :class:`BuildContext` (training targets, the frozen teacher for statistics, a cache directory), so
they never depend on hard-coded channel tables; they train with the student and live in checkpoints, and
buffers registered on the method (memory banks, adaptive state) are saved and restored with it.
``prepare`` may rewrite a batch before any forward pass (mixup); ``forward`` returns weighted, named terms.

``ranges`` gives the valid range of a numeric hyper-parameter (``{"nce_t": "> 0"}``; the grammar of
``kdbench.config_schema.parse_range``), for names that ``SHARED_RANGES`` does not cover or covers otherwise;
the preflight checks every value against it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from fnmatch import fnmatchcase
from typing import Callable, ClassVar, Iterable

import torch
import torch.nn as nn

from ..data.batch import Batch  # noqa: F401  (what forward receives)
from ..models.outputs import ModelOutput


@dataclass
class BuildContext:
    """What ``Method.build`` may use besides sample outputs; nothing here is trained."""

    num_classes: int
    train_targets: torch.Tensor  # (N,) int64 labels of the training set, in sample-index order (CPU)
    device: torch.device
    teacher: nn.Module | None  # the frozen teacher (eval mode, no grad), for statistics such as BN moments
    teacher_fingerprint: str | None  # a hash of the teacher's weights: a cache key for teacher-derived data
    cache_dir: Path  # a persistent directory (under the kdbench store) for such caches
    plain_train_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]
    """Yields (images, targets, index) over the whole training set without augmentation, on ``device``."""
    student: nn.Module | None = None  # the student being trained (for methods that look ahead through it)
    validation_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] | None = None
    """Yields (images, targets, index) over the validation split without augmentation, on ``device`` (methods
    declaring ``needs_validation``; None otherwise)."""

    @property
    def train_size(self) -> int:
        return int(self.train_targets.numel())


@dataclass
class Progress:
    epoch: int  # 1-based, as mdistiller counts epochs for warm-ups
    epochs: int
    step: int  # global optimiser step, 0-based
    steps_per_epoch: int


# Ranges of the hyper-parameter names most methods share (fnmatch patterns, first match wins); a method's own
# ``ranges`` come first.
SHARED_RANGES = {
    "temperature": "> 0",
    "weight": ">= 0", "*_weight": ">= 0",
    "alpha": ">= 0", "beta": ">= 0", "gamma": ">= 0",
    "warmup_epochs": ">= 0",
    "eps": "> 0",
    "*_fraction": "[0, 1]", "label_smoothing": "[0, 1]",
    "feat_dim": ">= 1", "mid_channels": ">= 1", "max_mid_channel": ">= 1",
}


from ..data.semi import UNLABELLED  # noqa: E402,F401  (the target of an image from the unlabelled pool)


class Method(nn.Module):
    ranges: ClassVar[dict[str, str]] = {}
    needs: ClassVar[frozenset[str]] = frozenset({"logits"})
    teacher_needs: ClassVar[frozenset[str] | None] = None
    uses_teacher: ClassVar[bool] = True
    teacher_batch_stats: ClassVar[bool] = False
    views: ClassVar[dict[str, str]] = {}
    task_terms: ClassVar[frozenset[str]] = frozenset({"ce"})
    needs_training_samples: ClassVar[bool] = False
    image_logits_from_stages: ClassVar[bool] = False
    uses_unlabelled: ClassVar[bool] = False
    needs_validation: ClassVar[bool] = False
    evaluation_needs: ClassVar[frozenset[str] | None] = None

    @classmethod
    def range_of(cls, name: str) -> str | None:
        """The valid range of hyper-parameter ``name``: the class's own (or a base class's), else the shared one."""
        for klass in cls.__mro__:
            if name in vars(klass).get("ranges", {}):
                return vars(klass)["ranges"][name]
        return next((spec for pattern, spec in SHARED_RANGES.items() if fnmatchcase(name, pattern)), None)

    @classmethod
    def needs_of(cls, role: str) -> frozenset[str]:
        """What the ``"student"`` or the ``"teacher"`` must give."""
        return cls.teacher_needs if role == "teacher" and cls.teacher_needs is not None else cls.needs

    def build(self, student: ModelOutput, teacher: ModelOutput | None, context: BuildContext) -> None:
        """Create trainable parts from sample outputs of the actual student/teacher pair (default: none)."""

    def prepare(self, batch: Batch, progress: Progress) -> Batch:
        """Rewrite the batch before the student and teacher see it (default: unchanged)."""
        return batch

    def hparams(self) -> dict:
        """The method's hyper-parameters, as recorded in result.json: the constructor's arguments, read back
        from the attributes of the same names (so every method stores each argument under its own name)."""
        params = inspect.signature(type(self).__init__).parameters.values()
        names = [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return {n: getattr(self, n) for n in names}

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch, progress: Progress) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, student: ModelOutput) -> torch.Tensor:
        """Class scores the student is evaluated on (methods with ``evaluation_needs``; default: its logits)."""
        return student.logits

    def select_on_validation(self, student: ModelOutput, targets: torch.Tensor) -> dict:
        """Choose what the method selects on validation data (``student``: the student's ``evaluation_needs``
        outputs over the whole validation split, concatenated; ``targets``: its labels); returns the choices, as
        recorded in result.json. Called before each evaluation by methods declaring ``needs_validation``."""
        return {}


METHODS: dict[str, type[Method]] = {}


def register_method(name: str):
    def add(cls: type[Method]) -> type[Method]:
        METHODS[name] = cls
        cls.method_name = name
        return cls

    return add
