"""Relational knowledge distillation (RKD) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["rkd_loss"]


def _pairwise_distances(e: torch.Tensor, squared: bool, eps: float) -> torch.Tensor:
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps)
    if not squared:
        d = d.sqrt()
    return d * (1 - torch.eye(len(e), dtype=d.dtype, device=d.device))


def _normalized_distances(e: torch.Tensor, squared: bool, eps: float) -> torch.Tensor:
    d = _pairwise_distances(e, squared, eps)
    return d / d[d > 0].mean()


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_loss(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0, squared: bool = False, eps: float = 1e-12) -> torch.Tensor:
    r"""Relational KD: distance-wise plus angle-wise potentials on the batch.

    .. math::

        \psi_D(i, j) = \frac{\lVert e_i - e_j\rVert}{\mu}, \quad
        \mu = \operatorname{mean}_{\psi > 0} \lVert e_i - e_j\rVert, \qquad
        \psi_A(i, j, k) = \Bigl\langle \tfrac{e_i - e_j}{\lVert e_i - e_j\rVert},
                                      \tfrac{e_k - e_j}{\lVert e_k - e_j\rVert} \Bigr\rangle

        \mathcal{L}_{RKD} = w_D \,\mathrm{SmoothL1}(\psi_D^S, \psi_D^T) + w_A \,\mathrm{SmoothL1}(\psi_A^S, \psi_A^T)

    Smooth-L1 (Huber, threshold 1) is averaged over all ``B^2`` distance and ``B^3`` angle entries. Squared
    distances are clamped below at ``eps`` before the square root, and the diagonal is set to 0.

    Source: Park et al., "Relational Knowledge Distillation", CVPR 2019. Computation as mdistiller
    ``mdistiller/distillers/RKD.py`` (``rkd_loss``; defaults ``CFG.RKD.DISTANCE_WEIGHT`` 25,
    ``ANGLE_WEIGHT`` 50, ``PDIST.SQUARED`` False, ``PDIST.EPSILON`` 1e-12), identical to RepDistiller
    ``distiller_zoo/RKD.py`` (``RKDLoss(w_d=25, w_a=50)``).

    Args:
        student_embedding: ``(B, ...)`` student vectors (flattened per sample).
        teacher_embedding: ``(B, ...)`` teacher vectors, treated as constants (detached); widths may differ.
        distance_weight: :math:`w_D`.
        angle_weight: :math:`w_A`.
        squared: use squared distances in :math:`\psi_D`.
        eps: lower clamp of the squared distances.
    """
    if student_embedding.shape[0] != teacher_embedding.shape[0]:
        raise ValueError(f"batch sizes differ: {student_embedding.shape[0]} and {teacher_embedding.shape[0]}")
    stu = student_embedding.flatten(1)
    tea = teacher_embedding.detach().flatten(1)
    loss_d = F.smooth_l1_loss(_normalized_distances(stu, squared, eps), _normalized_distances(tea, squared, eps))
    loss_a = F.smooth_l1_loss(_angles(stu), _angles(tea))
    return distance_weight * loss_d + angle_weight * loss_a
