"""Overhaul of feature distillation (OFD): teacher margins and the partial L2 loss."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["ofd_loss"]

# mdistiller / clovaai: below this probability of a negative response the margin falls back to -3 sigma
_MIN_NEGATIVE_PROB = 0.001


def ofd_margin(bn_weight: torch.Tensor, bn_bias: torch.Tensor) -> torch.Tensor:
    r"""Per-channel margin: the expected value of the teacher's negative pre-activation responses.

    Each channel of a BN output is taken as :math:`\mathcal{N}(m, s^2)` with :math:`m` = BN bias and
    :math:`s = |\text{BN weight}|`; the margin is :math:`E[x \mid x < 0]`:

    .. math::

        \text{margin} = m - s\, \frac{\varphi(m/s)}{\Phi(-m/s)} \quad\text{if } \Phi(-m/s) > 0.001,
        \qquad -3s \text{ otherwise.}

    Source: Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019; computed as
    megvii-research/mdistiller ``mdistiller/distillers/OFD.py`` (``init_ofd_modules``) and clovaai
    ``overhaul-distillation`` ``get_margin_from_BN`` (in double precision, returned as float32).

    Returns:
        ``(C,)`` float32 margins on the BN's device, without gradient.
    """
    s = bn_weight.detach().double().abs()
    m = bn_bias.detach().double()
    neg_prob = torch.special.ndtr(-m / s)
    expected = -s * torch.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / neg_prob + m
    return torch.where(neg_prob > _MIN_NEGATIVE_PROB, expected, -3 * s).float()


def ofd_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
             margins: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""Partial L2 distance between connector outputs and margin-clipped teacher pre-activations, over stages.

    For stage ``i`` of ``n`` (``t`` average-pooled to the student map's size, ``m`` the channel margin):

    .. math::

        d_i = (s-m)^2\,[s > m,\ t \le m] + (s-t)^2\,[s > t,\ m < t \le 0] + (s-t)^2\,[t > 0],
        \qquad
        \mathcal{L}_{OFD} = \sum_{i=1}^{n} \frac{1}{2^{\,n-i}} \cdot \frac{1}{B} \sum_{b,c,h,w} d_i

    i.e. no loss where the student is already below a teacher response that the teacher's ReLU discards, the
    teacher target lifted to the margin below it; deeper stages weigh more. Summed over channels and positions,
    averaged over the batch.

    Source: Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019. Computed as
    megvii-research/mdistiller ``mdistiller/distillers/OFD.py`` (``feat_loss``: ``abs(d).mean(0).sum()``, and
    ``OFD.ofd_loss``: teacher map ``adaptive_avg_pool2d``-ed to the student's size, stage weight
    ``1 / 2**(n - i - 1)`` with 0-based ``i``). The original code (clovaai ``distiller.py``) writes the same
    ``d`` as ``(s - max(t, m))^2 [s > max(t, m) or max(t, m) > 0]``.

    Args:
        student_feats: per stage, ``(B, C_i, H_i, W_i)`` student connector outputs (gradients flow into them).
        teacher_feats: per stage, ``(B, C_i, H'_i, W'_i)`` teacher pre-activation maps (detached).
        margins: per stage, ``(C_i,)`` margins (see :func:`ofd_margin`).
    """
    if not len(student_feats) == len(teacher_feats) == len(margins) or not student_feats:
        raise ValueError(f"need one teacher map and one margin per student map, got {len(student_feats)} student, "
                         f"{len(teacher_feats)} teacher maps and {len(margins)} margins")
    n = len(student_feats)
    total = student_feats[0].new_zeros(())
    for i, (s, t, m) in enumerate(zip(student_feats, teacher_feats, margins)):
        t = F.adaptive_avg_pool2d(t.detach(), s.shape[-2:])
        m = m.to(s).view(1, -1, 1, 1)
        d = ((s - m) ** 2 * ((s > m) & (t <= m))
             + (s - t) ** 2 * ((s > t) & (t > m) & (t <= 0))
             + (s - t) ** 2 * (t > 0))
        total = total + d.mean(dim=0).sum() / 2 ** (n - i - 1)
    return total
