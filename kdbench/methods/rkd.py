"""RKD: Park et al. CVPR 2019, relational KD (distance and angle potentials) on the pooled embedding.

loss = ce_weight * CE(s, y) + feat_weight * (distance_weight * L_dist + angle_weight * L_angle) on
(embedding_S, embedding_T) (mdistiller ``pooled_feat``, RepDistiller ``feat[-1]``). Defaults: mdistiller
configs/cifar100/rkd.yaml with mdistiller/engine/cfg.py (distance 25, angle 50, CE 1, feature 1, plain
distances, eps 1e-12).
The loss itself runs in float32 under bf16/fp16 autocast (``_connectors.in_float32``), as the float32
references compute it.
"""

import torch.nn.functional as F

from ..losses import rkd_loss
from ._connectors import in_float32
from .base import Method, register_method


@register_method("rkd")
class RKD(Method):
    needs = frozenset({"logits", "embedding"})

    def __init__(self, ce_weight: float = 1.0, feat_weight: float = 1.0, distance_weight: float = 25.0,
                 angle_weight: float = 50.0, squared: bool = False, eps: float = 1e-12):
        super().__init__()
        self.ce_weight, self.feat_weight = ce_weight, feat_weight
        self.distance_weight, self.angle_weight, self.squared, self.eps = distance_weight, angle_weight, squared, eps

    def forward(self, student, teacher, batch, progress):
        rkd = in_float32(rkd_loss, student.embedding, teacher.embedding, distance_weight=self.distance_weight,
                       angle_weight=self.angle_weight, squared=self.squared, eps=self.eps)
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets), "rkd": self.feat_weight * rkd}
