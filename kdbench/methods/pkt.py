"""PKT: Passalis & Tefas ECCV 2018, probabilistic knowledge transfer on the pooled embedding.

loss = ce_weight * CE(s, y) + feat_weight * PKT(embedding_S, embedding_T) (mdistiller ``pooled_feat``,
RepDistiller ``feat[-1]``). Defaults: mdistiller configs/cifar100/pkt.yaml with mdistiller/engine/cfg.py
(CE 1, feature 30000).
The loss itself runs in float32 under bf16/fp16 autocast (``_connectors.in_float32``), as the float32
references compute it.
"""

import torch.nn.functional as F

from ..losses import pkt_loss
from ._connectors import in_float32
from .base import Method, register_method


@register_method("pkt")
class PKT(Method):
    needs = frozenset({"logits", "embedding"})

    def __init__(self, ce_weight: float = 1.0, feat_weight: float = 30000.0):
        super().__init__()
        self.ce_weight, self.feat_weight = ce_weight, feat_weight

    def forward(self, student, teacher, batch, progress):
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
            "pkt": self.feat_weight * in_float32(pkt_loss, student.embedding, teacher.embedding),
        }
