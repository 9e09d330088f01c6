"""NST: Huang & Wang 2017, neuron selectivity transfer (polynomial-kernel MMD) over the stage maps after the stem.

loss = ce_weight * CE(s, y) + feat_weight * sum_j NST(stages_S[j], stages_T[j]) for j >= 1 (mdistiller
``feats[1:]``, RepDistiller ``feat[1:-1]``). Defaults: mdistiller configs/cifar100/nst.yaml with
mdistiller/engine/cfg.py (CE 1, feature 50).
The loss itself runs in float32 under bf16/fp16 autocast (``_connectors.in_float32``), as the float32
references compute it.
"""

import torch.nn.functional as F

from ..losses import nst_loss
from ._connectors import in_float32
from .base import Method, register_method


@register_method("nst")
class NST(Method):
    needs = frozenset({"logits", "stages"})

    def __init__(self, ce_weight: float = 1.0, feat_weight: float = 50.0):
        super().__init__()
        self.ce_weight, self.feat_weight = ce_weight, feat_weight

    def forward(self, student, teacher, batch, progress):
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
            "nst": self.feat_weight * in_float32(nst_loss, student.stages[1:], teacher.stages[1:]),
        }
