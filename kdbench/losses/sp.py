"""Similarity-preserving (SP) loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .at import stage_pairs

__all__ = ["sp_loss"]


def _normalized_gram(f: torch.Tensor) -> torch.Tensor:
    f = f.reshape(f.shape[0], -1)
    return F.normalize(f @ f.t())


def sp_loss(student_feats: torch.Tensor | Sequence[torch.Tensor],
            teacher_feats: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    r"""Similarity-preserving KD, summed over stage pairs.

    With :math:`G = \mathrm{rownorm}(F F^\top)` the ``B x B`` batch similarity of flattened features,

    .. math::

        \mathcal{L}_{SP} = \sum_{\text{stages}} \frac{1}{B^2} \bigl\lVert G^T - G^S \bigr\rVert_F^2

    Source: Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019. Computation as mdistiller
    ``mdistiller/distillers/SP.py`` (``sp_loss``), identical to RepDistiller ``distiller_zoo/SP.py``
    (``Similarity``); the references return a 1-element tensor, this returns a scalar. Both apply it to the
    last stage map only (the method passes ``[stages[-1]]``).

    Args:
        student_feats: student feature maps (a list, or one tensor), any shape ``(B, ...)``.
        teacher_feats: teacher feature maps, treated as constants (detached); sizes may differ from the student's.
    """
    total = 0.0
    for f_s, f_t in stage_pairs(student_feats, teacher_feats):
        batch = f_s.shape[0]
        diff = _normalized_gram(f_t) - _normalized_gram(f_s)
        total = total + diff.pow(2).sum() / (batch * batch)
    return total
