"""MEAL V2: Shen & Savvides, arXiv:2009.08453, ensemble soft labels and a logit discriminator, no hard labels.

    q      = (1/K) sum_k softmax(z_k)                         (mean of the K teachers' probabilities, T 1)
    L_sim  = -(1/B) sum_b sum_c q_bc log softmax(s_b)_c       (kdbench.losses.mealv2_loss)
    L_disc = BCEWithLogits(D(cat[s, (1/K) sum_k z_k]), [1,0] x B + [0,1] x B)   (mealv2_discriminator_loss)
    loss   = sim_weight * L_sim + disc_weight * L_disc        (the reference: 1 and 1, summed; no CE term)

``z_k`` are the teachers' logits (``ModelOutput.member_logits``, ``(K, B, C)``): ``teacher=ensemble
teacher.members=[a,b]`` gives K members, a single teacher K = 1. The soft target averages probabilities, the
discriminator's teacher input averages logits, as szq0214/MEAL-V2 ``extensions/teacher_wrapper.py`` does.

The discriminator ``D`` (:class:`LogitDiscriminator`) is szq0214/MEAL-V2 ``models/discriminator.py``: three 1x1
convolutions on the logits seen as a ``C x 1 x 1`` map, widths ``C -> C//r -> (C//r)//r -> 2`` with ``r`` =
``reduction`` (the reference's ``K``; ``train.py`` builds it with ``outputs_size=1000, K=8``: 1000 -> 125 -> 15 -> 2),
ReLU after every layer, the last included (so its scores are >= 0). The reference hard-codes 1000 inputs, so it
runs on 1000 classes only (its class, given another ``outputs_size``, divides the same way: 100 classes would give
100 -> 12 -> 1 -> 2, 10 classes a zero-width layer). Here the widths derive from the run's class count ``C`` by the
same integer divisions, each hidden width floored at 15, the reference's narrowest hidden layer (``MIN_HIDDEN``):
1000 classes give exactly the reference's network (as does any ``C >= 960`` with ``r`` 8), CIFAR-100
100 -> 15 -> 15 -> 2, 10 classes 10 -> 15 -> 15 -> 2. The floor matters because every unit ends in a ReLU: a
discriminator whose two output units are negative on every input is dead (``L_disc = log 2`` and no gradient, for
good). At initialisation, on ImageNet-like logits, that happens to 0.75% of the reference's 1000 -> 125 -> 15 -> 2
discriminators (400 seeds), to 17% of the reference class's 100 -> 12 -> 1 -> 2 and 12% of a 10 -> 2 -> 2 -> 2
one, and to 0.25-1.25% with the floor (docs/mealv2.md).

``D`` is built in ``build`` from the student's logits and, like every method part, trained by the student's
optimiser at the student's learning rate, momentum and weight decay. So is the reference's: ``train.py``
``create_optimizer`` puts the discriminator in its own SGD parameter group with ``lr = --d_lr`` (1e-4), but
``_set_learning_rate``, called at the start of every epoch before any step, writes the regime's learning rate into
every group, the discriminator's included, so ``d_lr`` is never used (momentum and weight decay are the SGD
defaults of both groups).

The reference's quirks are kept: the student's logits enter ``D`` undetached, and student and discriminator
minimise the same ``L_disc`` (one optimiser, one backward of ``L_sim + L_disc``: ``train.py``
``train_for_one_epoch``), so it is no min-max game; the teachers' mean logits are constants.
``disc_weight = 0`` builds no discriminator (``L_sim`` alone).

Defaults: the reference's (``train.py``, ``loss.py``, ``models/discriminator.py`` at
szq0214/MEAL-V2@59e6bca): weights 1 and 1, ``reduction`` 8. Its ImageNet recipe (pretrained teachers
``gluon_senet154`` + ``gluon_resnet152_v1s``, a pretrained student, SGD, no weight decay, lr 0.01 then 0.001,
batch 512, 180 epochs) is ``experiment=imagenet/mealv2_r50`` (docs/mealv2.md).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..losses import mealv2_discriminator_loss, mealv2_loss
from .base import Method, register_method

REFERENCE_CLASSES, REFERENCE_REDUCTION = 1000, 8  # models/discriminator.py as train.py builds it
MIN_HIDDEN = 15  # the reference's narrowest hidden layer: 1000 // 8 // 8


def discriminator_widths(num_classes: int, reduction: int = REFERENCE_REDUCTION) -> tuple[int, int, int, int]:
    """``(C, C//K, (C//K)//K, 2)`` with each hidden width at least ``MIN_HIDDEN``; ``(1000, 125, 15, 2)`` for the
    reference's 1000 classes and K 8."""
    first = max(num_classes // reduction, MIN_HIDDEN)
    second = max(first // reduction, MIN_HIDDEN)
    return num_classes, first, second, 2


class LogitDiscriminator(nn.Module):
    """Three 1x1 convolutions with a ReLU after each, on ``(N, C)`` logits; returns ``(N, 2)`` scores."""

    def __init__(self, num_classes: int, reduction: int = REFERENCE_REDUCTION):
        super().__init__()
        c, h1, h2, out = discriminator_widths(num_classes, reduction)
        self.conv1 = nn.Conv2d(c, h1, kernel_size=1)
        self.conv2 = nn.Conv2d(h1, h2, kernel_size=1)
        self.conv3 = nn.Conv2d(h2, out, kernel_size=1)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        x = logits[:, :, None, None]
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu(conv(x))
        return x.flatten(1)


@register_method("mealv2")
class MEALV2(Method):
    needs = frozenset({"logits"})
    teacher_needs = frozenset({"logits", "member_logits"})
    task_terms = frozenset()  # no hard-label term at all
    ranges = {"reduction": ">= 1"}

    def __init__(self, sim_weight: float = 1.0, disc_weight: float = 1.0, reduction: int = REFERENCE_REDUCTION):
        super().__init__()
        self.sim_weight, self.disc_weight, self.reduction = sim_weight, disc_weight, reduction
        self.discriminator: LogitDiscriminator | None = None

    def build(self, student, teacher, context):
        if teacher is None or teacher.member_logits is None:
            raise ConfigError("method=mealv2 needs the teachers' logits (member_logits), which this teacher does not give")
        if self.disc_weight > 0:
            self.discriminator = LogitDiscriminator(student.logits.shape[1], self.reduction)

    def forward(self, student, teacher, batch, progress):
        members = teacher.member_logits
        terms = {"sim": self.sim_weight * mealv2_loss(student.logits, members)}
        if self.discriminator is not None:
            mean_logits = members.detach().mean(dim=0).to(student.logits.dtype)
            scores = self.discriminator(torch.cat([student.logits, mean_logits], dim=0))
            terms["disc"] = self.disc_weight * mealv2_discriminator_loss(scores)
        return terms
