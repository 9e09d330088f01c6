"""Correlation congruence (CC) loss, in the form HobbitLong/RepDistiller trains it."""

from __future__ import annotations

import torch

__all__ = ["cc_loss"]


def cc_loss(student_embed: torch.Tensor, teacher_embed: torch.Tensor) -> torch.Tensor:
    r"""RepDistiller's correlation-congruence loss on embedded features.

    With :math:`\delta_i = |e^S_i - e^T_i|` (element-wise) for the ``B`` samples of the batch, in batch order:

    .. math::

        \mathcal{L}_{CC} = \frac{1}{B-1} \sum_{i=1}^{B-1} \sum_{d} \delta_{i,d}\, \delta_{i+1,d}

    i.e. the inner product of the absolute student-teacher embedding differences of each sample and the next
    one, averaged over the ``B - 1`` consecutive pairs.

    Source: Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019, as implemented in
    HobbitLong/RepDistiller ``distiller_zoo/CC.py`` (``Correlation``, code the authors shared with
    RepDistiller). This is a simplified form of the paper's loss, which matches the full ``B x B`` correlation
    matrices of student and teacher under a Gaussian RBF kernel (approximated by its Taylor series),
    :math:`\frac{1}{B^2}\lVert \psi(F^T) - \psi(F^S) \rVert_2^2`: RepDistiller's form uses no kernel, no
    correlation matrix and only consecutive sample pairs, and it is what the CRD benchmark numbers for CC were
    trained with; it is reproduced here exactly.

    Args:
        student_embed: ``(B, D)`` student embedding (the student's pooled feature after its linear embedding).
        teacher_embed: ``(B, D)`` teacher embedding. Not detached: in RepDistiller the teacher's linear
            embedding is trainable and learns through this loss (the frozen teacher feature enters it detached).

    Returns:
        Scalar loss (needs ``B >= 2``).
    """
    if student_embed.dim() != 2 or student_embed.shape != teacher_embed.shape:
        raise ValueError(f"student and teacher embeddings must be (B, D) of one shape, got "
                         f"{tuple(student_embed.shape)} and {tuple(teacher_embed.shape)}")
    if student_embed.shape[0] < 2:
        raise ValueError("cc_loss needs a batch of at least 2 samples (it pairs consecutive samples)")
    delta = (student_embed - teacher_embed).abs()
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()
