"""CRD: Tian et al. ICLR 2020, contrastive representation distillation with momentum memory banks.

Student and teacher pooled embeddings are projected to ``feat_dim`` (linear + l2-normalisation). Each side has
a memory bank of one ``feat_dim`` row per training sample (initialised uniform in +-1/sqrt(feat_dim / 3),
updated after every step by ``m <- normalise(nce_m * m + (1 - nce_m) * v)``). A student anchor is scored
against the teacher bank at its own index (positive, "exact" mode) and at ``nce_k`` negatives drawn uniformly
from training samples of other classes, and symmetrically for teacher anchors:
``P = exp(v^T m / nce_t) / Z``, where each side's ``Z`` is estimated once, on the first batch, as
``mean(exp(v^T m / nce_t)) * N`` and then kept. The loss is :func:`kdbench.losses.crd_loss`.

Follows HobbitLong/RepDistiller ``crd/{criterion,memory}.py`` and ``dataset/cifar100.py``
(``CIFAR100InstanceSample``, mode "exact") and mdistiller ``distillers/CRD.py``. Defaults: mdistiller
``configs/cifar100/crd.yaml`` and ``engine/cfg.py`` (CE 1, CRD 0.8, feat_dim 128, K 16384, tau 0.07, momentum
0.5); RepDistiller's CRD runs use ``-a 0`` (no KD term: ``kd_weight`` 0, its KD temperature 4 when enabled).

Differences from the references, none of which changes the maths: negatives are drawn on the device per batch
with the global torch RNG (:class:`kdbench.data.sampling.OtherClassSampler`; without replacement as the CIFAR
loaders do, ``nce_replacement=True`` for mdistiller's ImageNet sampler) instead of in the data loader; ``Z``
and the banks are registered buffers, so they live in checkpoints; the projection, scores and loss run in
float32 even under bf16/fp16 autocast (``exp(s / 0.07)`` amplifies low-precision rounding of the scores).
Under data parallelism every rank gathers the whole global batch's embeddings and indices and applies the whole
momentum update, and ``Z`` is estimated from every rank's scores, so the banks stay identical on all ranks and
equal one process's (the references update each process's banks with its own samples only).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.sampling import OtherClassSampler
from ..distributed import all_gather_rows, all_reduce_sum
from ..losses import crd_loss, kd_loss
from .base import Method, register_method


def _embed(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    x = linear(x.reshape(x.shape[0], -1).float())
    return x / x.pow(2).sum(1, keepdim=True).pow(0.5)


@register_method("crd")
class CRD(Method):
    needs = frozenset({"logits", "embedding"})
    needs_training_samples = True  # memory banks indexed by training-sample index

    ranges = {"nce_k": ">= 1", "nce_t": "> 0", "nce_m": "[0, 1)"}

    def __init__(self, ce_weight: float = 1.0, crd_weight: float = 0.8, kd_weight: float = 0.0,
                 temperature: float = 4.0, feat_dim: int = 128, nce_k: int = 16384, nce_t: float = 0.07,
                 nce_m: float = 0.5, nce_replacement: bool = False):
        super().__init__()
        self.ce_weight, self.crd_weight, self.kd_weight, self.temperature = ce_weight, crd_weight, kd_weight, temperature
        self.feat_dim, self.nce_k, self.nce_t, self.nce_m = feat_dim, nce_k, nce_t, nce_m
        self.nce_replacement = nce_replacement

    def build(self, student, teacher, context):
        n = context.train_size
        self.embed_s = nn.Linear(student.embedding.flatten(1).shape[1], self.feat_dim)
        self.embed_t = nn.Linear(teacher.embedding.flatten(1).shape[1], self.feat_dim)
        stdv = 1.0 / math.sqrt(self.feat_dim / 3)
        self.register_buffer("memory_s", torch.rand(n, self.feat_dim) * (2 * stdv) - stdv)
        self.register_buffer("memory_t", torch.rand(n, self.feat_dim) * (2 * stdv) - stdv)
        # Z for student anchors, Z for teacher anchors; negative until set from the first batch.
        self.register_buffer("nce_z", torch.full((2,), -1.0))
        self.sampler = OtherClassSampler(context.train_targets, replacement=self.nce_replacement)

    def contrast_loss(self, s_embedding: torch.Tensor, t_embedding: torch.Tensor, index: torch.Tensor,
                      contrast_index: torch.Tensor) -> torch.Tensor:
        """Unweighted CRD loss for given sample indices and ``(B, K + 1)`` contrast indices (positive first);
        sets ``Z`` on the first call and updates both memory banks."""
        with torch.autocast(s_embedding.device.type, enabled=False):
            v_s, v_t = _embed(self.embed_s, s_embedding), _embed(self.embed_t, t_embedding.detach())
            # Memory rows are constants: the banks change only through the momentum update below.
            rows_t = self.memory_t[contrast_index]  # (B, K + 1, D)
            rows_s = self.memory_s[contrast_index]
            exp_s = torch.exp(torch.bmm(rows_t, v_s.unsqueeze(2)).squeeze(2) / self.nce_t)
            exp_t = torch.exp(torch.bmm(rows_s, v_t.unsqueeze(2)).squeeze(2) / self.nce_t)
            n = self.memory_s.shape[0]
            # Z from the first batch (under data parallelism, from every rank's scores of the first global
            # batch); computed each step and kept only while unset, so no step waits on the host
            sums = all_reduce_sum(torch.stack([exp_s.sum(), exp_t.sum(), exp_s.new_tensor(float(exp_s.numel()))]).detach())
            z = torch.where(self.nce_z < 0, sums[:2] / sums[2] * n, self.nce_z)
            self.nce_z.copy_(z)
            loss = crd_loss(exp_s / z[0], exp_t / z[1], num_data=n)
            with torch.no_grad():
                # every rank applies the whole global batch's update, so the banks stay identical across ranks
                all_index, all_s, all_t = all_gather_rows(index, v_s.detach(), v_t.detach())
                for memory, v in ((self.memory_s, all_s), (self.memory_t, all_t)):
                    row = memory[all_index] * self.nce_m + v * (1 - self.nce_m)
                    memory.index_copy_(0, all_index, row / row.pow(2).sum(1, keepdim=True).pow(0.5))
        return loss

    def forward(self, student, teacher, batch, progress):
        index = batch.index
        negatives = self.sampler(self.sampler.targets[index], self.nce_k)
        contrast_index = torch.cat([index.unsqueeze(1), negatives], dim=1)
        crd = self.contrast_loss(student.embedding, teacher.embedding, index, contrast_index)
        terms = {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
                 "crd": self.crd_weight * crd}
        if self.kd_weight > 0:
            terms["kd"] = self.kd_weight * kd_loss(student.logits, teacher.logits, temperature=self.temperature)
        return terms
