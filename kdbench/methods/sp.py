"""SP: Tung & Mori ICCV 2019, similarity-preserving KD on the last stage map.

loss = ce_weight * CE(s, y) + feat_weight * SP(stages_S[-1], stages_T[-1]) (mdistiller ``feats[-1]``,
RepDistiller ``feat[-2]``). Defaults: mdistiller configs/cifar100/sp.yaml with mdistiller/engine/cfg.py
(CE 1, feature 3000).
The loss itself runs in float32 under bf16/fp16 autocast (``_connectors.in_float32``), as the float32
references compute it.
"""

import torch.nn.functional as F

from ..losses import sp_loss
from ._connectors import in_float32
from .base import Method, register_method


@register_method("sp")
class SP(Method):
    needs = frozenset({"logits", "stages"})

    def __init__(self, ce_weight: float = 1.0, feat_weight: float = 3000.0):
        super().__init__()
        self.ce_weight, self.feat_weight = ce_weight, feat_weight

    def forward(self, student, teacher, batch, progress):
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
            "sp": self.feat_weight * in_float32(sp_loss, [student.stages[-1]], [teacher.stages[-1]]),
        }
