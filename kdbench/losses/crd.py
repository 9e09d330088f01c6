"""Contrastive representation distillation (CRD) loss."""

from __future__ import annotations

import torch

__all__ = ["crd_loss"]

_EPS = 1e-7  # the references' ``eps`` in ContrastLoss


def crd_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor, *, num_data: int) -> torch.Tensor:
    r"""CRD's NCE objective, both anchors: ``nce(student_scores) + nce(teacher_scores)``.

    Each score tensor is ``(B, K + 1)``: ``P_{b,0}`` is the normalised score of the positive pair and
    ``P_{b,1..K}`` those of ``K`` negatives, ``P = exp(v^T m / tau) / Z`` (anchor embedding ``v``, memory row
    ``m``, temperature ``tau``, normalisation constant ``Z``). With the uniform noise distribution
    ``P_n = 1 / num_data`` and ``c = K P_n``:

    .. math::

        \mathrm{nce}(P) = -\frac{1}{B} \sum_b \Bigl[ \log \frac{P_{b,0}}{P_{b,0} + c + \epsilon}
            + \sum_{j=1}^{K} \log \frac{c}{P_{b,j} + c + \epsilon} \Bigr], \qquad \epsilon = 10^{-7}

    ``student_scores`` are those of student anchors against the teacher memory bank, ``teacher_scores`` of
    teacher anchors against the student memory bank.

    Source: Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020, Eq. (18);
    reduction as HobbitLong/RepDistiller ``crd/criterion.py`` ``ContrastLoss`` (also mdistiller
    ``distillers/CRD.py``): sum over positives and negatives, divided by the batch size.

    Args:
        student_scores: ``(B, K + 1)`` positive scores, positive first.
        teacher_scores: ``(B, K + 1)`` likewise for the teacher anchors.
        num_data: training-set size ``N`` (the noise distribution is uniform over it).
    """
    return _nce(student_scores, num_data) + _nce(teacher_scores, num_data)


def _nce(scores: torch.Tensor, num_data: int) -> torch.Tensor:
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (B, K + 1) with K >= 1, got shape {tuple(scores.shape)}")
    c = (scores.shape[1] - 1) / float(num_data)
    positive, negative = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(positive / (positive + (c + _EPS)))
    log_d0 = torch.log(c / (negative + (c + _EPS)))
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]
