"""Neuron selectivity transfer (NST) loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .at import match_spatial, stage_pairs

__all__ = ["nst_loss"]


def _poly_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(b, a.transpose(1, 2)).pow(2).mean()


def nst_loss(student_feats: torch.Tensor | Sequence[torch.Tensor],
             teacher_feats: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    r"""Neuron selectivity transfer: squared MMD with the polynomial kernel :math:`k(x, y) = (x^\top y)^2`,
    summed over stage pairs.

    Each channel's activation pattern (flattened over positions, after pooling the larger map to the smaller
    one's size) is L2-normalised, giving :math:`s_i` (student, :math:`C_S` rows) and :math:`t_j` (teacher,
    :math:`C_T` rows) per sample, and

    .. math::

        \mathcal{L}_{NST} = \sum_{\text{stages}} \Bigl[ \operatorname{mean}_{b,i,i'} k(t_i, t_{i'})
            + \operatorname{mean}_{b,i,i'} k(s_i, s_{i'}) - 2 \operatorname{mean}_{b,j,i} k(s_i, t_j) \Bigr]

    Source: Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer",
    arXiv:1707.01219. Computation as mdistiller ``mdistiller/distillers/NST.py`` (``nst_loss``), identical to
    RepDistiller ``distiller_zoo/NST.py`` (``NSTLoss`` with ``full_loss=True``). The references form the kernel
    matrix by broadcasting a ``(B, C, C, HW)`` product; here it is the batched matrix product
    ``(S T^T)^2``, the same entries with far less memory. Stages pair by ``zip``, as in the references.

    Args:
        student_feats: student stage maps ``(B, C_j, H_j, W_j)`` (a list, or one tensor for one stage).
        teacher_feats: teacher stage maps, treated as constants (detached).
    """
    total = 0.0
    for f_s, f_t in stage_pairs(student_feats, teacher_feats):
        f_s, f_t = match_spatial(f_s, f_t)
        f_s = F.normalize(f_s.flatten(2), dim=2)
        f_t = F.normalize(f_t.flatten(2), dim=2)
        total = total + _poly_kernel_mean(f_t, f_t) + _poly_kernel_mean(f_s, f_s) - 2 * _poly_kernel_mean(f_s, f_t)
    return total
