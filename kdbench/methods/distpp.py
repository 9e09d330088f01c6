"""DIST++: DIST plus the ND term (Wang et al. ICCV 2023, WangYZ1608/Knowledge-Distillation-via-ND).

loss = ce_weight * CE + min((epoch - 1) / warmup_epochs, 1) * kd_weight * DIST_T + nd_weight * ND, with
DIST_T = T^2 (beta * inter + gamma * intra) as ``kdbench.losses.dist_loss`` (the same as the ``DIST`` class of
CIFAR/DIST++/utils.py). The warm-up is the reference's min(1, epoch / warm_up) with its 0-based epochs
(CIFAR/DIST++/train_dist.py @ fc6f3f9), so the DIST term is zero in the first epoch; the ND term is not warmed
up. Class means and the embedding projection: see nd.py. Defaults: CIFAR/DIST++/train_dist.sh, resnet32x4 ->
resnet8x4 (1.0*cls + 1.5*kd + 4.0*nd), and train_dist.py (``--t 4``, ``--warm_up 20``, ``DIST(beta=1, gamma=1)``).
Deviation: train_dist.py loads the class means from a hard-coded file (resnet56's; its comment names one file
per teacher); here they are always the actual teacher's, computed as nd.py does.
"""

import torch.nn.functional as F

from ..losses import dist_loss
from .base import register_method
from .nd import ND


@register_method("distpp")
class DISTPP(ND):
    def __init__(self, ce_weight: float = 1.0, kd_weight: float = 1.5, nd_weight: float = 4.0, beta: float = 1.0,
                 gamma: float = 1.0, temperature: float = 4.0, warmup_epochs: int = 20):
        super().__init__(ce_weight=ce_weight, nd_weight=nd_weight)
        self.kd_weight, self.beta, self.gamma = kd_weight, beta, gamma
        self.temperature, self.warmup_epochs = temperature, warmup_epochs

    def forward(self, student, teacher, batch, progress):
        ramp = min((progress.epoch - 1) / self.warmup_epochs, 1.0) if self.warmup_epochs > 0 else 1.0
        dist = dist_loss(student.logits, teacher.logits, beta=self.beta, gamma=self.gamma, temperature=self.temperature)
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
                "dist": ramp * self.kd_weight * dist,
                "nd": self.nd_term(student, teacher, batch)}
