"""ACAM-KD: Lan & Tian, "Adaptive and Cooperative Attention Masking for Knowledge Distillation" (ICCV 2025,
arXiv 2503.06307), on a model's stage maps: a detector's FPN levels p2..p6, or a classifier's stage maps.

loss = ce_weight * CE + weight * sum_levels (L^c + L^s) + div_weight * sum_levels (L_div(M^c) + L_div(M^s))
(:mod:`kdbench.losses.acamkd`; the paper's L_task + alpha (L^c + L^s) + lambda L_div, alpha = lambda = 1).

Per paired level (the last ``L`` maps of each model, ``L`` the smaller count; all five FPN levels on detection),
with its own parameters:

- STCA-FF, cross-attention with the teacher's map as queries: ``Q = W_q F_T``, ``K = W_k F_S``, ``V = W_v F_S``
  (1x1 projections without bias; ``W_q``, ``W_k`` to ``C_q = C_T / 2``, ``W_v`` to ``C_T``),
  ``F_fused = softmax(Q^T K / sqrt(C_q)) V``, on the teacher's grid. ``max_positions`` > 0 average-pools the
  student's keys and values by the smallest integer factor that leaves at most that many positions (kdbench's
  option for large maps, off by default: the paper attends over every position);
- ASCM, ``num_masks`` learnable selection units per mask family: channel masks
  ``M^c = sigmoid(m_c v)``, ``m_c`` in R^{M x 1}, ``v`` the spatial mean of ``F_fused``; spatial masks
  ``M^s = sigmoid(m_s z)``, ``m_s`` in R^{M x C}, ``z`` the flattened ``F_fused``. The units and the
  projections train with the student on the imitation and diversity losses, so the masks are re-estimated at
  every step from the current student;
- the student map aligned to the teacher's: a 1x1 convolution where the widths differ, bilinear resizing where
  the grids differ (neither on FPN levels of equal width, as FGD / MasKD align).

Defaults: alpha (``weight``) 1, lambda (``div_weight``) 1, M = 6 masks for detection (the paper's values, as
secondary sources report them: the paper's text could not be retrieved and no code is published). kdbench's own
choices (docs/paper_methods.md): one fusion module and one set of units per level; the diversity loss on each
mask family, summed; level losses summed (as MasKD sums its levels); selection units drawn from N(0, 0.01^2)
(MasKD's token initialisation); CE weight 1. The losses run in float32 under bf16/fp16 autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import acamkd_diversity_loss, acamkd_loss
from ._connectors import in_float32, paired_stages
from .base import Method, register_method


class CrossAttentionFusion(nn.Module):
    """STCA-FF: the teacher's map queries the student's; the fused map has the teacher's width and grid."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        reduced = max(teacher_channels // 2, 1)
        self.query = nn.Conv2d(teacher_channels, reduced, 1, bias=False)
        self.key = nn.Conv2d(student_channels, reduced, 1, bias=False)
        self.value = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)

    def forward(self, teacher: torch.Tensor, student: torch.Tensor, max_positions: int = 0) -> torch.Tensor:
        positions = student.shape[-2] * student.shape[-1]
        if max_positions > 0 and positions > max_positions:
            student = F.avg_pool2d(student, math.ceil(math.sqrt(positions / max_positions)), ceil_mode=True)
        q = self.query(teacher).flatten(2).transpose(1, 2)  # (B, HW_T, C_q)
        k = self.key(student).flatten(2).transpose(1, 2)  # (B, HW_S, C_q)
        v = self.value(student).flatten(2).transpose(1, 2)  # (B, HW_S, C_T)
        fused = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C_q)) v
        return fused.transpose(1, 2).reshape(teacher.shape[0], -1, *teacher.shape[-2:])


class SelectionUnits(nn.Module):
    """ASCM: ``num_masks`` channel units (scalars) and spatial units (``C``-vectors) turn the fused map into
    ``(B, M, C)`` channel masks and ``(B, M, H*W)`` spatial masks."""

    def __init__(self, channels: int, num_masks: int):
        super().__init__()
        self.channel_units = nn.Parameter(torch.randn(num_masks, 1) * 0.01)
        self.spatial_units = nn.Parameter(torch.randn(num_masks, channels) * 0.01)

    def forward(self, fused: torch.Tensor):
        pooled = fused.mean((2, 3))  # (B, C)
        channel = torch.sigmoid(self.channel_units.unsqueeze(0) * pooled.unsqueeze(1))  # (B, M, C)
        spatial = torch.sigmoid(self.spatial_units @ fused.flatten(2))  # (B, M, HW)
        return channel, spatial


class Align(nn.Module):
    """The student map on the teacher's width (1x1 convolution) and grid (bilinear), where they differ."""

    def __init__(self, student_shape, teacher_shape):
        super().__init__()
        s_c, t_c = student_shape[1], teacher_shape[1]
        self.conv = nn.Conv2d(s_c, t_c, 1) if s_c != t_c else nn.Identity()

    def forward(self, student: torch.Tensor, size) -> torch.Tensor:
        x = self.conv(student)
        return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=tuple(size), mode="bilinear",
                                                                          align_corners=False)


@register_method("acamkd")
class ACAMKD(Method):
    needs = frozenset({"logits", "stages"})

    ranges = {"num_masks": ">= 1", "max_positions": ">= 0"}

    def __init__(self, ce_weight: float = 1.0, weight: float = 1.0, div_weight: float = 1.0, num_masks: int = 6,
                 max_positions: int = 0):
        super().__init__()
        self.ce_weight, self.weight, self.div_weight = ce_weight, weight, div_weight
        self.num_masks, self.max_positions = num_masks, max_positions

    def build(self, student, teacher, context):
        s_maps, t_maps = paired_stages(student, teacher)
        self.fusions = nn.ModuleList(CrossAttentionFusion(s.shape[1], t.shape[1]) for s, t in zip(s_maps, t_maps))
        self.units = nn.ModuleList(SelectionUnits(t.shape[1], self.num_masks) for t in t_maps)
        self.aligns = nn.ModuleList(Align(s.shape, t.shape) for s, t in zip(s_maps, t_maps))

    def level_masks(self, level: int, student_map: torch.Tensor, teacher_map: torch.Tensor):
        """The channel and spatial masks of one level (STCA-FF, then ASCM)."""
        return self.units[level](self.fusions[level](teacher_map, student_map, self.max_positions))

    def masked_terms(self, student, teacher):
        imitation, diversity = 0.0, 0.0
        for level, (s_map, t_map) in enumerate(zip(*paired_stages(student, teacher))):
            t_map = t_map.detach()
            channel, spatial = self.level_masks(level, s_map, t_map)
            aligned = self.aligns[level](s_map, t_map.shape[-2:])
            imitation = imitation + in_float32(acamkd_loss, t_map, aligned, channel, spatial)
            diversity = diversity + in_float32(acamkd_diversity_loss, channel) + in_float32(acamkd_diversity_loss,
                                                                                            spatial)
        return self.weight * imitation, self.div_weight * diversity

    def forward(self, student, teacher, batch, progress):
        imitation, diversity = self.masked_terms(student, teacher)
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
                "acamkd": imitation, "acamkd_div": diversity}
