"""AT: Zagoruyko & Komodakis ICLR 2017, attention transfer over the stage maps after the stem.

loss = ce_weight * CE(s, y) + feat_weight * sum_j AT_p(stages_S[j], stages_T[j]) for j >= 1 (mdistiller
``feats[1:]``, RepDistiller ``feat[1:-1]``), stage pairs formed by zip as both references do. Defaults:
mdistiller configs/cifar100/at.yaml with mdistiller/engine/cfg.py (p 2, CE 1, feature 1000).
The loss itself runs in float32 under bf16/fp16 autocast (``_connectors.in_float32``), as the float32
references compute it.
"""

import torch.nn.functional as F

from ..losses import at_loss
from ._connectors import in_float32
from .base import Method, register_method


@register_method("at")
class AT(Method):
    needs = frozenset({"logits", "stages"})

    ranges = {"p": ">= 1"}

    def __init__(self, p: int = 2, ce_weight: float = 1.0, feat_weight: float = 1000.0):
        super().__init__()
        self.p, self.ce_weight, self.feat_weight = p, ce_weight, feat_weight

    def forward(self, student, teacher, batch, progress):
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
            "at": self.feat_weight * in_float32(at_loss, student.stages[1:], teacher.stages[1:], p=self.p),
        }
