"""DIST: Huang et al. NeurIPS 2022. loss = ce_weight * CE(s, y) + kd_weight * DIST(s, t).

DIST(s, t) = T^2 (beta * inter-class + gamma * intra-class Pearson distance of softmax(./T)); see
``kdbench.losses.dist_loss``. Defaults are the CIFAR-100 recipe of hunto/image_classification_sota (the
``classification`` submodule of hunto/DIST_KD), ``configs/strategies/distill/dist_cifar.yaml``:
``ori_loss_weight: 1`` (CE weight; ``smoothing: 0.0``, so plain CE), ``kd_loss_weight: 2``, ``kd: dist_t4``
(T = 4); beta = gamma = 1 are fixed in ``lib/models/losses/kd_loss.py``.
"""

import torch.nn.functional as F

from ..losses import dist_loss
from .base import Method, register_method


@register_method("dist")
class DIST(Method):
    def __init__(self, ce_weight: float = 1.0, kd_weight: float = 2.0, beta: float = 1.0, gamma: float = 1.0,
                 temperature: float = 4.0):
        super().__init__()
        self.ce_weight, self.kd_weight = ce_weight, kd_weight
        self.beta, self.gamma, self.temperature = beta, gamma, temperature

    def forward(self, student, teacher, batch, progress):
        dist = dist_loss(student.logits, teacher.logits, beta=self.beta, gamma=self.gamma, temperature=self.temperature)
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets), "dist": self.kd_weight * dist}
