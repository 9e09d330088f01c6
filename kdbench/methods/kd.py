"""KD: Hinton et al. 2015. loss = ce_weight * CE(s, y) + kd_weight * T^2 * KL(p_t^T || p_s^T).

Defaults: mdistiller configs/cifar100/kd.yaml (T 4, CE 0.1, KD 0.9).
``logit_stand`` Z-scores student and teacher logits before the temperature (Sun et al., "Logit Standardization
in Knowledge Distillation", CVPR 2024); their CIFAR runs pair it with T 2 and KD weight 9 (README and
tools/train.py ``--logit-stand --base-temp 2 --kd-weight 9`` of sunshangquan/logit-standardization-KD).
"""

import torch.nn.functional as F

from ..losses import kd_loss
from .base import Method, register_method


def hparams_without_unset_switch(method: Method) -> dict:
    """The method's hyper-parameters; ``logit_stand`` only when it is on, so plain runs keep their record."""
    values = Method.hparams(method)
    if not values.get("logit_stand"):
        values.pop("logit_stand", None)
    return values


@register_method("kd")
class KD(Method):
    def __init__(self, temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9,
                 logit_stand: bool = False):
        super().__init__()
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight
        self.logit_stand = logit_stand

    hparams = hparams_without_unset_switch

    def forward(self, student, teacher, batch, progress):
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
            "kd": self.kd_weight * kd_loss(student.logits, teacher.logits, temperature=self.temperature,
                                           logit_stand=self.logit_stand),
        }
