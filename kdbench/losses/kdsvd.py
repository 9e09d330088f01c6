"""Self-supervised KD with singular value decomposition (KDSVD) loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .at import stage_pairs

__all__ = ["kdsvd_loss"]


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _leading_right_singular(feat: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised top-``n`` singular values ``(B, n)`` and right singular vectors ``(B, W, n)`` of the
    ``(C*H) x W`` matrix of each sample's map."""
    if feat.dim() != 4:
        raise ValueError(f"kdsvd needs (B, C, H, W) maps, got shape {tuple(feat.shape)}")
    b, c, h, w = feat.shape
    x = feat.reshape(b, c * h, w).float()
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    s, v = _finite(s), _finite(vh.mT)
    return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)


def _align_signs(v_s: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    """For each teacher vector, the student vector of largest |cosine|, with the sign of that cosine."""
    cosine = v_s.mT @ v_t
    best = cosine.abs().amax(dim=1, keepdim=True)
    pick = torch.where(cosine.abs() == best, torch.sign(cosine), torch.zeros_like(cosine))
    return v_s @ pick


def _rbf(v: torch.Tensor, v_prev: torch.Tensor) -> torch.Tensor:
    return torch.exp(-(v.unsqueeze(2) - v_prev.unsqueeze(1)).pow(2) / 8)


def kdsvd_loss(student_feats: torch.Tensor | Sequence[torch.Tensor],
               teacher_feats: torch.Tensor | Sequence[torch.Tensor], k: int = 1) -> torch.Tensor:
    r"""KDSVD: match RBF correlations between the leading singular vectors of consecutive stages.

    Each map is read as a ``(C*H) x W`` matrix per sample and decomposed. The teacher keeps its top ``k``
    right singular vectors, the student its top ``k + 3``; each teacher vector is matched (with sign) to the
    student vector of largest absolute cosine, and both are scaled by the teacher's L2-normalised top-``k``
    singular values, giving :math:`v^T_j, v^S_j \in \mathbb{R}^{W_j \times k}` for stage :math:`j`. With
    :math:`R(v, u)_{a,c,m} = \exp(-(v_{a,m} - u_{c,m})^2 / 8)`,

    .. math::

        \mathcal{L}_{KDSVD} = \frac{1}{B} \sum_{j \ge 1} \sum_{b,a,c,m}
            \bigl( R(v^S_j, v^S_{j-1}) - R(v^T_j, v^T_{j-1}) \bigr)^2

    with non-finite entries (of the SVD and of the squared differences) set to zero.

    Source: Lee, Kim & Song, "Self-supervised Knowledge Distillation Using Singular Value Decomposition",
    ECCV 2018 (TensorFlow code sseung0703/SSKD_SVD). Computation as mdistiller
    ``mdistiller/distillers/KDSVD.py`` (``kdsvd_loss``, ``CFG.KDSVD.K`` = 1). RepDistiller
    ``distiller_zoo/KDSVD.py`` differs: it decomposes each map as an ``(H*W) x C`` matrix (right singular
    vectors over channels, so student and teacher channel counts must agree), where mdistiller, followed here,
    reshapes to ``(C*H) x W`` (right singular vectors over the width, so the widths must agree instead); the
    two give different values.

    The SVD runs in float32 whatever the input dtype, as mdistiller's ``.float()``: the signs LAPACK gives the
    singular vectors are not the same in every precision, and the loss depends on the teacher's signs (the
    student's are aligned to them), so other precisions give other values, not merely rounding differences.

    Args:
        student_feats: student stage maps ``(B, C_j, H_j, W_j)``; gradients flow through the SVD.
        teacher_feats: teacher stage maps, treated as constants (detached); ``W_j`` must equal the student's.
        k: number of teacher singular vectors kept.
    """
    pairs = stage_pairs(student_feats, teacher_feats)
    if len(pairs) < 2:
        raise ValueError("kdsvd relates consecutive stages, so it needs at least two stage pairs")
    terms, prev_s, prev_t = [], None, None
    for f_s, f_t in pairs:
        if f_s.shape[-1] != f_t.shape[-1]:
            raise ValueError(f"kdsvd compares right singular vectors over the map width; student width "
                             f"{f_s.shape[-1]} and teacher width {f_t.shape[-1]} differ")
        s_t, v_t = _leading_right_singular(f_t, k)
        _, v_s = _leading_right_singular(f_s, k + 3)
        v_s = _align_signs(v_s, v_t)
        v_t, v_s = v_t * s_t.unsqueeze(1), v_s * s_t.unsqueeze(1)
        if prev_s is not None:
            diff = (_rbf(v_s, prev_s) - _rbf(v_t, prev_t)).pow(2)
            terms.append(_finite(diff).sum())
        prev_s, prev_t = v_s, v_t
    return torch.stack(terms).sum() / pairs[0][0].shape[0]
