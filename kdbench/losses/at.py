"""Attention transfer (AT) loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["at_loss"]


def as_maps(feats: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A list of stage maps; a single ``(B, C, H, W)`` tensor is one stage (never iterated over its batch)."""
    return [feats] if isinstance(feats, torch.Tensor) else list(feats)


def stage_pairs(student_feats, teacher_feats) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(student, detached teacher) map pairs, formed by ``zip`` as the references do; at least one."""
    pairs = [(f_s, f_t.detach()) for f_s, f_t in zip(as_maps(student_feats), as_maps(teacher_feats))]
    if not pairs:
        raise ValueError("no stage maps given")
    return pairs


def match_spatial(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the taller of two maps down to the other's spatial size (the references compare heights)."""
    if f_s.shape[2] > f_t.shape[2]:
        f_s = F.adaptive_avg_pool2d(f_s, f_t.shape[2:])
    elif f_s.shape[2] < f_t.shape[2]:
        f_t = F.adaptive_avg_pool2d(f_t, f_s.shape[2:])
    return f_s, f_t


def _attention(feat: torch.Tensor, p: int) -> torch.Tensor:
    return F.normalize(feat.pow(p).mean(1).reshape(feat.shape[0], -1))


def at_loss(student_feats: torch.Tensor | Sequence[torch.Tensor], teacher_feats: torch.Tensor | Sequence[torch.Tensor],
            p: int = 2) -> torch.Tensor:
    r"""Attention transfer, summed over stage pairs.

    For each pair of maps (the larger one first average-pooled to the smaller one's size) the spatial
    attention map is :math:`a(f) = \mathrm{vec}(\tfrac{1}{C}\sum_c f_c^{\,p}) / \lVert\cdot\rVert_2` and

    .. math::

        \mathcal{L}_{AT} = \sum_{j} \frac{1}{B\,H_j W_j} \sum_{b} \bigl\lVert a(f^S_{j,b}) - a(f^T_{j,b}) \bigr\rVert_2^2

    (the squared difference averaged over batch and positions, as ``(.).pow(2).mean()``).

    Source: Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017. Computation as mdistiller
    ``mdistiller/distillers/AT.py`` (``at_loss`` / ``single_stage_at_loss``), identical to RepDistiller
    ``distiller_zoo/AT.py`` (``Attention``, summed by the training loop). Stage pairs are formed by ``zip`` (the
    shorter list decides how many), as in both references. The references pool to ``(H, H)``, assuming square
    maps; here the pooled size is the other map's ``(H, W)``, which is the same for square maps.

    Args:
        student_feats: student stage maps ``(B, C_j, H_j, W_j)`` (a list, or one tensor for one stage).
        teacher_feats: teacher stage maps, treated as constants (detached); channel counts may differ.
        p: exponent of the attention map (the published CIFAR setting is 2).
    """
    total = 0.0
    for f_s, f_t in stage_pairs(student_feats, teacher_feats):
        f_s, f_t = match_spatial(f_s, f_t)
        total = total + (_attention(f_s, p) - _attention(f_t, p)).pow(2).mean()
    return total
