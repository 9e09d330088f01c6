"""Variational information distillation (VID) loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["vid_loss"]


def vid_loss(pred_mean: torch.Tensor, teacher_feat: torch.Tensor, log_scale: torch.Tensor,
             eps: float = 1e-5) -> torch.Tensor:
    r"""Negative log-likelihood of the teacher map under a Gaussian predicted from the student.

    .. math::

        \sigma_c^2 = \mathrm{softplus}(\alpha_c) + \epsilon, \qquad
        \mathcal{L}_{VID} = \frac{1}{BCHW} \sum_{b,c,h,w}
            \frac{1}{2}\Bigl( \frac{(\mu_{bchw} - t_{bchw})^2}{\sigma_c^2} + \log \sigma_c^2 \Bigr)

    where ``mu = r(s)`` is the regressor's prediction from the student map and ``alpha`` the per-channel
    ``log_scale`` (the constant ``log 2 pi / 2`` of the Gaussian is dropped, as in the references).

    Source: Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR 2019. Reduction as
    megvii-research/mdistiller ``mdistiller/distillers/VID.py`` (``vid_loss``) and HobbitLong/RepDistiller
    ``distiller_zoo/VID.py`` (``VIDLoss``), which agree: mean over every element. Both write the softplus as
    ``log(1 + exp(alpha))``; ``F.softplus`` is the same function without overflow for large ``alpha``.

    Args:
        pred_mean: ``(B, C, H, W)`` regressor output from the (spatially matched) student map.
        teacher_feat: teacher map of the same shape, treated as a constant (detached).
        log_scale: ``(C,)`` per-channel variance parameter; gradients flow into it.
        eps: variance floor.
    """
    if pred_mean.shape != teacher_feat.shape:
        raise ValueError(f"predicted mean {tuple(pred_mean.shape)} and teacher map {tuple(teacher_feat.shape)} "
                         "must have the same shape")
    if log_scale.shape != (pred_mean.shape[1],):
        raise ValueError(f"log_scale must have shape ({pred_mean.shape[1]},), got {tuple(log_scale.shape)}")
    variance = (F.softplus(log_scale) + eps).view(1, -1, 1, 1)
    return (0.5 * ((pred_mean - teacher_feat.detach()) ** 2 / variance + variance.log())).mean()


def vid_log_scale_init(init_pred_var: float = 5.0, eps: float = 1e-5) -> float:
    """The ``log_scale`` at which the variance equals ``init_pred_var``: ``log(exp(init_pred_var - eps) - 1)``,
    the references' initial value (softplus inverse)."""
    return math.log(math.expm1(init_pred_var - eps))
