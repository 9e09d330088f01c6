"""KD: Hinton et al. 2015. loss = ce_weight * CE(s, y) + kd_weight * T^2 * KL(p_t^T || p_s^T).

Defaults: mdistiller configs/cifar100/kd.yaml (T 4, CE 0.1, KD 0.9).
"""

import torch.nn.functional as F

from ..losses import kd_loss
from .base import Method, register_method


@register_method("kd")
class KD(Method):
    def __init__(self, temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9):
        super().__init__()
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight

    def forward(self, student, teacher, batch, progress):
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
            "kd": self.kd_weight * kd_loss(student.logits, teacher.logits, temperature=self.temperature),
        }
