"""ReviewKD's hierarchical context loss (HCL)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["hcl_loss"]


def hcl_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
             levels: Sequence[int] = (4, 2, 1)) -> torch.Tensor:
    r"""Hierarchical context loss: multi-scale MSE between paired feature maps, summed over pairs.

    For each pair ``(f_s, f_t)`` of ``(B, C, H, W)`` maps, with ``P_l`` adaptive average pooling to ``l x l``
    and only the levels ``l < H`` used, the ``i``-th used level weighted ``2^{-i}``:

    .. math::

        \mathrm{HCL}(f_s, f_t) = \frac{\mathrm{MSE}(f_s, f_t) + \sum_i 2^{-i}\,
            \mathrm{MSE}(P_{l_i} f_s, P_{l_i} f_t)}{1 + \sum_i 2^{-i}}, \qquad
        \mathcal{L} = \sum_{\text{pairs}} \mathrm{HCL}(f_s, f_t)

    (MSE is the element mean.) Teacher maps are constants (detached).

    Source: Chen et al., "Distilling Knowledge via Knowledge Review", CVPR 2021; as ``hcl`` in
    dvlab-research/ReviewKD ``CIFAR-100/model/reviewkd.py`` and ``hcl_loss`` in mdistiller
    ``distillers/ReviewKD.py`` (pyramid levels 4, 2, 1; level count decided by ``H``).

    Args:
        student_feats: student maps, one per level.
        teacher_feats: teacher maps of the same shapes, in the same order.
        levels: pyramid pooling sizes, in the order their weights halve.
    """
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"got {len(student_feats)} student and {len(teacher_feats)} teacher feature maps")
    total = 0.0
    for fs, ft in zip(student_feats, teacher_feats):
        if fs.shape != ft.shape:
            raise ValueError(f"student map {tuple(fs.shape)} and teacher map {tuple(ft.shape)} differ in shape")
        ft = ft.detach()
        h = fs.shape[2]
        loss = F.mse_loss(fs, ft, reduction="mean")
        weight, weights = 1.0, 1.0
        for level in levels:
            if level >= h:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, level), F.adaptive_avg_pool2d(ft, level))
            weights += weight
        total = total + loss / weights
    return total
