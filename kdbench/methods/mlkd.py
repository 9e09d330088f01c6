"""MLKD: Jin et al. CVPR 2023, multi-level logit distillation on a weak and a strong view.

loss = ce_weight * (CE(s^w, y) + CE(s^s, y)) + kd_weight * (kd + cc + bc), the instance, class-correlation
and batch-correlation terms of ``mlkd_loss`` at temperatures (T, 3, 5, 2, 6); no warm-up.
The main batch is the weak view (crop + flip); the strong view is its own crop + flip followed by the official
code's RandAugment(2, 10), FixMatch's variant with random magnitudes and Cutout (``kdbench.data.randaugment``).
Defaults: Jin-Ying/Multi-Level-Logit-Distillation (KD_ours, CFG.KD: T 4, CE 0.1, KD 0.9; configs/cifar100/ours).
``logit_stand`` (Sun et al., CVPR 2024) Z-scores the logits of the instance terms; their MLKD runs use T 2 and
KD weight 9 (sunshangquan/logit-standardization-KD README, ``--logit-stand --base-temp 2 --kd-weight 9``).
"""

import torch.nn.functional as F

from ..losses.mlkd import mlkd_terms
from .base import Method, register_method


@register_method("mlkd")
class MLKD(Method):
    views = {"strong": "randaugment_fixmatch"}

    def __init__(self, temperature: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9,
                 logit_stand: bool = False):
        super().__init__()
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight
        self.logit_stand = logit_stand

    def forward(self, student, teacher, batch, progress):
        strong_s, strong_t = student.views["strong"], teacher.views["strong"]
        terms = mlkd_terms(student.logits, teacher.logits, strong_s.logits, strong_t.logits,
                           temperature=self.temperature, logit_stand=self.logit_stand)
        ce = F.cross_entropy(student.logits, batch.targets) + F.cross_entropy(strong_s.logits, batch.targets)
        return {"ce": self.ce_weight * ce, **{name: self.kd_weight * value for name, value in terms.items()}}
