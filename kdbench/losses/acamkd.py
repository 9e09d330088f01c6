r"""ACAM-KD: Lan & Tian, "ACAM-KD: Adaptive and Cooperative Attention Masking for Knowledge Distillation"
(ICCV 2025, arXiv 2503.06307): the masked feature imitation and the Dice diversity loss.

No reference code is published and the paper's method section could not be retrieved; the equations are read
from the paper as secondary sources transcribe them (their numbers are not known to kdbench, so each is named).
For one feature level, teacher map :math:`F_T` and aligned student map :math:`f(F_S)`, both ``(C, H, W)``, and
:math:`D = F_T - f(F_S)`; :math:`M` channel masks :math:`M^c_m \in (0,1)^C` and spatial masks
:math:`M^s_m \in (0,1)^{HW}` (kdbench/methods/acamkd.py makes them):

- channel distillation:
  :math:`L^c = \frac1M \sum_m \frac{\lVert M^c_m \odot D \rVert_2^2}{HW \sum_k M^c_{m,k}}`
  (the mask broadcast over positions), i.e. :math:`\sum_k (M^c_{m,k})^2 \sum_p D_{k,p}^2 / (HW \sum_k M^c_{m,k})`;
- spatial distillation:
  :math:`L^s = \frac1M \sum_m \frac{\lVert M^s_m \odot D \rVert_2^2}{C \sum_p M^s_{m,p}}`;
- diversity: the Dice coefficient of every ordered pair of distinct masks,
  :math:`L_{div} = \frac{1}{M(M-1)} \sum_{i \ne j} \frac{2 \langle M_i, M_j\rangle}{\lVert M_i\rVert^2 + \lVert M_j\rVert^2}`.

Each is averaged over the batch. The mask enters the imitation term as MasKD (Huang et al., ICLR 2023, the masked
distillation ACAM-KD extends) computes it: the mask multiplies the difference, normalised by the mask's mass;
MasKD's ``dice_coeff`` (hunto/MasKD @ b5af34f, mmrazor/mmrazor/models/losses/maskd.py) is the same pairwise
Dice. The paper's total loss is ``L_task + alpha (L^c + L^s) + lambda L_div`` with alpha = lambda = 1.
"""

from __future__ import annotations

import torch

__all__ = ["acamkd_loss", "acamkd_diversity_loss"]


def acamkd_loss(teacher: torch.Tensor, student: torch.Tensor, channel_masks: torch.Tensor,
                spatial_masks: torch.Tensor) -> torch.Tensor:
    """Channel plus spatial masked imitation, ``L^c + L^s``, of ``(B, C, H, W)`` maps (the student already aligned
    to the teacher's shape) under ``(B, M, C)`` channel masks and ``(B, M, H*W)`` spatial masks."""
    b, c, h, w = teacher.shape
    sq = (teacher - student).pow(2).flatten(2)  # (B, C, HW)
    per_channel, per_position = sq.sum(2), sq.sum(1)  # (B, C), (B, HW)
    channel_mass, spatial_mass = channel_masks.sum(2).clamp_min(1e-12), spatial_masks.sum(2).clamp_min(1e-12)
    channel = (channel_masks.pow(2) * per_channel.unsqueeze(1)).sum(2) / (h * w * channel_mass)
    spatial = (spatial_masks.pow(2) * per_position.unsqueeze(1)).sum(2) / (c * spatial_mass)
    return channel.mean() + spatial.mean()


def acamkd_diversity_loss(masks: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The mean Dice coefficient over ordered pairs of distinct masks of ``(B, M, L)`` masks (0 for one mask)."""
    m = masks.shape[1]
    if m < 2:
        return masks.sum() * 0.0
    inner = masks @ masks.transpose(1, 2)  # (B, M, M)
    norms = masks.pow(2).sum(2) + eps
    dice = 2 * inner / (norms.unsqueeze(2) + norms.unsqueeze(1))
    off = ~torch.eye(m, dtype=torch.bool, device=masks.device)
    return dice[:, off].mean()
