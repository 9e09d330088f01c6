"""DKD++: DKD plus the ND term (Wang et al. ICCV 2023, WangYZ1608/Knowledge-Distillation-via-ND).

loss = ce_weight * CE + min((epoch - 1) / warmup_epochs, 1) * (alpha * TCKD + beta * NCKD) + nd_weight * ND.
The warm-up is the reference's min(1, epoch / warm_up) with its 0-based epochs (CIFAR/train_cifar_dkd.py), so
the DKD term is zero in the first epoch; the ND term is not warmed up. Class means and the embedding
projection: see nd.py. Defaults: CIFAR/train_cifar.sh, resnet32x4 -> resnet8x4 (1.0*cls + 2.0*tckd +
8.0*nckd + 0.5*nd, T 4, warm-up 20).
"""

import torch.nn.functional as F

from ..losses import dkd_loss
from .base import register_method
from .nd import ND


@register_method("dkdpp")
class DKDPP(ND):
    def __init__(self, ce_weight: float = 1.0, alpha: float = 2.0, beta: float = 8.0, nd_weight: float = 0.5,
                 temperature: float = 4.0, warmup_epochs: int = 20):
        super().__init__(ce_weight=ce_weight, nd_weight=nd_weight)
        self.alpha, self.beta, self.temperature, self.warmup_epochs = alpha, beta, temperature, warmup_epochs

    def forward(self, student, teacher, batch, progress):
        ramp = min((progress.epoch - 1) / self.warmup_epochs, 1.0) if self.warmup_epochs > 0 else 1.0
        dkd = dkd_loss(student.logits, teacher.logits, batch.targets, alpha=self.alpha, beta=self.beta,
                       temperature=self.temperature)
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
                "dkd": ramp * dkd,
                "nd": self.nd_term(student, teacher, batch)}
