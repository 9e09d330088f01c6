"""KDSVD: Lee et al. ECCV 2018, SVD-based KD between consecutive stage maps after the stem.

loss = ce_weight * CE(s, y) + feat_weight * KDSVD_k(stages_S[1:], stages_T[1:]) (mdistiller ``feats[1:]``).
The mdistiller loss decomposes each map over its width, so every paired student/teacher stage must have the
same width; ``build`` checks this on the probe shapes (see :func:`kdbench.losses.kdsvd_loss`, which also notes
how RepDistiller's version differs). Defaults: mdistiller configs/cifar100/kdsvd.yaml with
mdistiller/engine/cfg.py (k 1, CE 1, feature 1).
The loss itself runs in float32 under bf16/fp16 autocast (``_connectors.in_float32``), as the float32
references compute it.
"""

import torch.nn.functional as F

from ..errors import ConfigError
from ..losses import kdsvd_loss
from ._connectors import in_float32
from .base import Method, register_method


@register_method("kdsvd")
class KDSVD(Method):
    needs = frozenset({"logits", "stages"})

    ranges = {"k": ">= 1"}

    def __init__(self, k: int = 1, ce_weight: float = 1.0, feat_weight: float = 1.0):
        super().__init__()
        self.k, self.ce_weight, self.feat_weight = k, ce_weight, feat_weight

    def build(self, student, teacher, context):
        pairs = list(zip(student.stages[1:], teacher.stages[1:]))
        if len(pairs) < 2:
            raise ConfigError("method=kdsvd needs at least two stage maps after the stem in both networks")
        widths = [(s.shape[-1], t.shape[-1]) for s, t in pairs]
        if any(s != t for s, t in widths):
            raise ConfigError(f"method=kdsvd needs equal student and teacher map widths at every paired stage; "
                              f"this pair has (student, teacher) widths {widths}")

    def forward(self, student, teacher, batch, progress):
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
            "kdsvd": self.feat_weight * in_float32(kdsvd_loss, student.stages[1:], teacher.stages[1:], k=self.k),
        }
