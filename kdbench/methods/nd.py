"""ND: Wang et al. ICCV 2023, "Improving Knowledge Distillation via Regularizing Feature Norm and Direction".

loss = ce_weight * CE(s, y) + nd_weight * ND(proj(f_s), f_t; teacher class means). KD++ and DKD++ (kdpp.py,
dkdpp.py) add the KD / DKD term to this. Everything ND-specific lives here:

- the teacher's class-mean embeddings, from one pass of the teacher over the un-augmented training set, kept
  in the registered buffer ``class_means`` and cached on disk per teacher weights and training labels;
- the student-to-teacher embedding projection used where the widths differ, as ``EmbTrans`` of
  WangYZ1608/Knowledge-Distillation-via-ND (CIFAR/Models/embtrans_cifar.py): BatchNorm1d -> Dropout(0.5) ->
  Linear, BN weight 1 / bias 0, Linear bias 0; it trains with the student.

Deviation: the reference computes the class means (emb_fea_distribution.py) on its training loader, which
applies random crop and flip, and rounds to 4 decimals; here the un-augmented training set is used at full
precision, so the means are deterministic.
ND alone has no published CIFAR setting (the paper always pairs it with a logit loss); the default weight is
KD++'s for resnet32x4 -> resnet8x4 (CIFAR/train_cifar.sh: 1.0*cls + 3.5*kd + 2.0*nd).
"""

from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import nd_loss
from ..models import run_model
from ._class_means import teacher_class_average
from .base import BuildContext, Method, register_method


def teacher_class_means(context: BuildContext) -> torch.Tensor:
    """(num_classes, D) mean teacher embedding of each class over the un-augmented training set (CPU, float32),
    cached per teacher and labels (a class with no training sample gets a zero row)."""
    return teacher_class_average(
        context, lambda images: run_model(context.teacher, images, {"embedding"}).embedding, "nd_class_means")


def embedding_projector(student_dim: int, teacher_dim: int) -> nn.Module:
    """BatchNorm1d -> Dropout(0.5) -> Linear(student_dim, teacher_dim) with zero bias, as the reference EmbTrans."""
    linear = nn.Linear(student_dim, teacher_dim)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(student_dim), nn.Dropout(0.5), linear)


@register_method("nd")
class ND(Method):
    needs_training_samples = True  # the teacher's class means come from a pass over the training images
    needs = frozenset({"logits", "embedding"})

    def __init__(self, ce_weight: float = 1.0, nd_weight: float = 2.0):
        super().__init__()
        self.ce_weight, self.nd_weight = ce_weight, nd_weight
        self.projector = None

    def build(self, student, teacher, context):
        s_dim, t_dim = student.embedding.shape[1], teacher.embedding.shape[1]
        self.projector = embedding_projector(s_dim, t_dim) if s_dim != t_dim else None
        self.register_buffer("class_means", teacher_class_means(context))

    def nd_term(self, student, teacher, batch) -> torch.Tensor:
        embedding = student.embedding if self.projector is None else self.projector(student.embedding)
        return self.nd_weight * nd_loss(embedding, teacher.embedding, self.class_means, batch.targets)

    def forward(self, student, teacher, batch, progress):
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
                "nd": self.nd_term(student, teacher, batch)}
