"""DKD: Zhao et al. CVPR 2022, decoupled KD = alpha * TCKD + beta * NCKD, linearly warmed up.

The DKD term is scaled by min(epoch / warmup_epochs, 1) with 1-based epochs, as mdistiller's DKD.forward_train.
Defaults: mdistiller configs/cifar100/dkd/res32x4_res8x4.yaml (CE 1, alpha 1, beta 8, T 4, warm-up 20).
``logit_stand`` Z-scores student and teacher logits first (Sun et al., CVPR 2024); their tools/train.py then
multiplies alpha and beta by the KD weight 9 and sets T 2 (README: ``--logit-stand --base-temp 2 --kd-weight 9``).
"""

import torch.nn.functional as F

from ..losses import dkd_loss
from .base import Method, register_method
from .kd import hparams_without_unset_switch


@register_method("dkd")
class DKD(Method):
    def __init__(self, ce_weight: float = 1.0, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup_epochs: int = 20, logit_stand: bool = False):
        super().__init__()
        self.ce_weight, self.alpha, self.beta, self.temperature = ce_weight, alpha, beta, temperature
        self.warmup_epochs, self.logit_stand = warmup_epochs, logit_stand

    hparams = hparams_without_unset_switch

    def forward(self, student, teacher, batch, progress):
        ramp = min(progress.epoch / self.warmup_epochs, 1.0) if self.warmup_epochs > 0 else 1.0
        dkd = dkd_loss(student.logits, teacher.logits, batch.targets, alpha=self.alpha, beta=self.beta,
                       temperature=self.temperature, logit_stand=self.logit_stand)
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets), "dkd": ramp * dkd}
