"""ReviewKD on a model's stage maps as they are (a detector's FPN levels p2..p6): the detection form of ReviewKD
(Chen et al. CVPR 2021) in ReviewKD ``Detection/model/kd_trans.py`` and mdistiller ``detection/model/reviewkd.py``.

The student's last ``L`` stage maps (``L`` = the number the teacher gives, 5 FPN levels on detection) pass through
ABF blocks (:class:`kdbench.methods.reviewkd.ABF`: 1x1 conv + BN to ``mid_channels``, attention fusion with the
coarser level's result, 3x3 conv + BN to the teacher's channels; the references use 256 -> 256 -> 256) from the
coarsest level to the finest; the loss is :func:`kdbench.losses.hcl_loss` against the teacher's maps of the same
levels, weighted ``weight`` with no warm-up (the detection configs' ``REVIEWKD.LOSS_WEIGHT``: 1.2 for R101 -> R18,
1.0 for R101 -> R50, 2.0 for R50 -> MobileNetV2). Unlike the classification ReviewKD (``reviewkd``), targets are
the teacher's stage maps themselves, not pre-activation maps plus the pooled embedding.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..losses import hcl_loss
from ._connectors import paired_stages
from .base import Method, register_method
from .reviewkd import ABF


@register_method("reviewkd_fpn")
class ReviewKDFPN(Method):
    needs = frozenset({"logits", "stages"})

    def __init__(self, ce_weight: float = 1.0, weight: float = 1.0, mid_channels: int = 256):
        super().__init__()
        self.ce_weight, self.weight, self.mid_channels = ce_weight, weight, mid_channels

    def build(self, student, teacher, context):
        inputs, targets = paired_stages(student, teacher)
        last = len(inputs) - 1
        self.abfs = nn.ModuleList(ABF(s.shape[1], self.mid_channels, t.shape[1], fuse=i < last)
                                  for i, (s, t) in enumerate(zip(inputs, targets)))

    def review_term(self, student, teacher):
        inputs, targets = paired_stages(student, teacher)
        results = [None] * len(targets)
        above = None
        for i in reversed(range(len(targets))):
            results[i], above = self.abfs[i](inputs[i], above, targets[i].shape[-2:])
        return self.weight * hcl_loss(results, targets)

    def forward(self, student, teacher, batch, progress):
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
                "reviewkd": self.review_term(student, teacher)}
