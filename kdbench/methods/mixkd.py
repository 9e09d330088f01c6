"""MIX-KD: Choi et al. WACV 2023, partial mixup with distillation on std-normalised logits.

``prepare`` mixes the batch before either model sees it (hchoi71/MIX-KD ``helper/loops_mixstd.py``, ``PMU``):
two random permutations ``p1, p2`` of the batch, ``lam ~ Beta(a, a)`` per sample, and with partial mixup
``int(B * keep_fraction)`` positions drawn with replacement get ``lam = 1`` (unmixed); then
``x = lam x[p1] + (1 - lam) x[p2]`` and the soft target is ``lam onehot(y[p1]) + (1 - lam) onehot(y[p2])``.
Student and teacher both see the mixed images. The loss (``MIXSTDLoss``) is

    ce_weight * (soft-target CE on s / std(s)) + kd_weight * KL(softmax(t / std t) || softmax(s / std s))

(``kdbench.losses.mixkd_loss``). Defaults are the argparse defaults of ``train_student_MIXSTD.py`` (the
repository's CIFAR-100 entry point; it ships no run scripts): ``gamma 0.1`` (CE), ``alpha 0.9`` (KD),
``pmixup True``, ``partmixup 0.9``, ``beta_a 1.0``.

Random draws use the global torch generator on the CPU (the engine reseeds it per epoch), in the reference's
order (permutation, permutation, Beta, indices); the reference draws ``lam`` from NumPy instead. The
reference divides logits by their std at evaluation as well; that leaves top-k accuracy unchanged, so the
engine's plain evaluation gives the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..losses import mixkd_loss
from ..losses.mixkd import mixkd_cross_entropy
from .base import Batch, Method, register_method


@dataclass
class MixedBatch(Batch):
    """A batch after mixup: ``images = lam * (sample of targets) + (1 - lam) * (sample of partner_targets)``."""

    partner_targets: torch.Tensor | None = None
    lam: torch.Tensor | None = None  # (B,) weight of ``targets``


@register_method("mixkd")
class MIXKD(Method):
    ranges = {"mixup_alpha": "> 0"}  # Beta(a, a) needs a > 0

    def __init__(self, ce_weight: float = 0.1, kd_weight: float = 0.9, partial: bool = True,
                 keep_fraction: float = 0.9, mixup_alpha: float = 1.0):
        super().__init__()
        self.ce_weight, self.kd_weight = ce_weight, kd_weight
        self.partial, self.keep_fraction, self.mixup_alpha = partial, keep_fraction, mixup_alpha

    def prepare(self, batch: Batch, progress) -> MixedBatch:
        n, device = batch.images.shape[0], batch.images.device
        p1, p2 = torch.randperm(n), torch.randperm(n)
        a = torch.tensor(float(self.mixup_alpha))
        lam = torch.distributions.Beta(a, a).sample((n,))
        if self.partial:
            lam[torch.randint(0, n, (int(n * self.keep_fraction),))] = 1.0
        p1, p2 = p1.to(device), p2.to(device)
        lam = lam.to(device)
        w = lam.to(batch.images.dtype).view(-1, *([1] * (batch.images.dim() - 1)))
        images = w * batch.images[p1] + (1 - w) * batch.images[p2]
        return MixedBatch(images, batch.targets[p1], batch.index[p1], {}, partner_targets=batch.targets[p2], lam=lam)

    def forward(self, student, teacher, batch, progress):
        s = student.logits
        soft = F.one_hot(batch.targets, s.shape[1]).to(s.dtype)
        lam = getattr(batch, "lam", None)
        if lam is not None:
            lam = lam.to(s.dtype).unsqueeze(1)
            soft = lam * soft + (1 - lam) * F.one_hot(batch.partner_targets, s.shape[1]).to(s.dtype)
        return {"ce": self.ce_weight * mixkd_cross_entropy(s, soft), "mixkd": self.kd_weight * mixkd_loss(s, teacher.logits)}
