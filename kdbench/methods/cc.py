"""CC: Peng et al. ICCV 2019, "Correlation Congruence for Knowledge Distillation", as RepDistiller trains it.

loss = ce_weight * CE(s, y) [+ kd_weight * KD(s, t; T)] + cc_weight * CC(E_s(f_s), E_t(f_t)), with ``f`` the
pooled pre-logit features and ``E_s``, ``E_t`` linear embeddings to ``feat_dim`` dimensions (RepDistiller
``LinearEmbed``, created in ``train_student.py``). Both embeddings are trainable and optimised with the student;
the frozen teacher's feature enters detached. CC is RepDistiller's ``distiller_zoo/CC.py`` (see
:func:`kdbench.losses.cc_loss` for exactly what it computes: a simplified form of the paper's Gaussian-kernel
correlation congruence).

Defaults: RepDistiller ``scripts/run_cifar_distill.sh`` for ``--distill correlation``: ``-r 1 -a 0 -b 0.02``
(CE 1, no KD term, CC 0.02), ``--feat_dim 128``, ``--kd_T 4``.
"""

import torch.nn as nn
import torch.nn.functional as F

from ..losses import cc_loss, kd_loss
from .base import Method, register_method


@register_method("cc")
class CC(Method):
    needs = frozenset({"logits", "embedding"})

    def __init__(self, ce_weight: float = 1.0, kd_weight: float = 0.0, cc_weight: float = 0.02, feat_dim: int = 128,
                 temperature: float = 4.0):
        super().__init__()
        self.ce_weight, self.kd_weight, self.cc_weight = ce_weight, kd_weight, cc_weight
        self.feat_dim, self.temperature = feat_dim, temperature

    def build(self, student, teacher, context):
        self.embed_s = nn.Linear(student.embedding.shape[1], self.feat_dim)
        self.embed_t = nn.Linear(teacher.embedding.shape[1], self.feat_dim)

    def forward(self, student, teacher, batch, progress):
        cc = cc_loss(self.embed_s(student.embedding), self.embed_t(teacher.embedding.detach()))
        terms = {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets), "cc": self.cc_weight * cc}
        if self.kd_weight:
            terms["kd"] = self.kd_weight * kd_loss(student.logits, teacher.logits, temperature=self.temperature)
        return terms
