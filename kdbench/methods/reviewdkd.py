"""DKD + ReviewKD (the "DKD+ReviewKD" rows of the DKD paper's COCO table): both terms on one detector pair, as
mdistiller ``detection/model/rcnn.py`` (``KD.TYPE: ReviewDKD``, configs/ReviewDKD/*.yaml, added in 83c7d41): DKD on
the RoI logits (alpha 1, beta 0.25, T 1, no warm-up) plus ReviewKD on the FPN maps (:mod:`.reviewkd_fpn`, the
same per-pair weights as ReviewKD alone)."""

from __future__ import annotations

import torch.nn.functional as F

from ..losses import dkd_loss
from .base import register_method
from .reviewkd_fpn import ReviewKDFPN


@register_method("reviewdkd")
class ReviewDKD(ReviewKDFPN):
    def __init__(self, ce_weight: float = 1.0, weight: float = 1.0, mid_channels: int = 256, alpha: float = 1.0,
                 beta: float = 0.25, temperature: float = 1.0):
        super().__init__(ce_weight, weight, mid_channels)
        self.alpha, self.beta, self.temperature = alpha, beta, temperature

    def forward(self, student, teacher, batch, progress):
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
                "dkd": dkd_loss(student.logits, teacher.logits, batch.targets, alpha=self.alpha, beta=self.beta,
                                temperature=self.temperature),
                "reviewkd": self.review_term(student, teacher)}
