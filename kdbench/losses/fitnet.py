"""FitNet hint loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fitnet_loss"]


def fitnet_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    r"""Hint loss: mean squared error between the regressed student map and the teacher's hint map.

    .. math::

        \mathcal{L}_{hint} = \frac{1}{BCHW} \bigl\lVert r(f^S) - f^T \bigr\rVert_2^2

    ``student_feat`` is the student's guided-layer map *after* the convolutional regressor ``r`` (see
    :class:`kdbench.methods._connectors.ConvRegressor`), so both maps have the teacher's shape.

    Source: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015. Reduction as mdistiller
    ``mdistiller/distillers/FitNet.py`` (``F.mse_loss``, mean over every element) and RepDistiller
    ``distiller_zoo/FitNet.py`` (``HintLoss``: ``nn.MSELoss()``), which agree.

    Args:
        student_feat: ``(B, C, H, W)`` regressed student map; gradients flow into it.
        teacher_feat: teacher map of the same shape, treated as a constant (detached).
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(f"regressed student map {tuple(student_feat.shape)} and teacher map "
                         f"{tuple(teacher_feat.shape)} must have the same shape")
    return F.mse_loss(student_feat, teacher_feat.detach())
