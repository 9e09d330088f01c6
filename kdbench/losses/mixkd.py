"""MIX-KD: distillation on standard-deviation-normalised logits (used with partial mixup)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kd import _check_pair

__all__ = ["mixkd_loss"]


def _std_normalised(logits: torch.Tensor) -> torch.Tensor:
    return logits / logits.std(dim=1, keepdim=True)  # unbiased std over classes, as torch.std by default


def mixkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    r"""KL divergence between teacher and student after dividing each logit vector by its own std.

    .. math::

        \hat z = z / \mathrm{std}(z), \qquad
        \mathcal{L}_{MIXKD} = \frac{1}{B} \sum_b \mathrm{KL}\bigl(\mathrm{softmax}(\hat t_b) \,\|\,
        \mathrm{softmax}(\hat s_b)\bigr)

    (``std`` with Bessel's correction over the classes; the student's std is not detached; no temperature).

    Source: Choi, Jeon, Shukla & Turaga, "Understanding the Role of Mixup in Knowledge
    Distillation: An Empirical Study", WACV 2023 (arXiv:2211.03946). Computation follows hchoi71/MIX-KD
    ``distiller_zoo/MIXSTD.py``, ``MIXSTDLoss`` (``nn.KLDivLoss(reduction='batchmean')`` on the normalised
    logits). The mixup of the inputs and the loss weights live in ``kdbench.methods.mixkd``.

    Args:
        student_logits: ``(B, C)`` student logits on the (mixed) batch; gradients flow into these.
        teacher_logits: ``(B, C)`` teacher logits on the same batch, treated as a constant (detached).

    Returns:
        Scalar loss tensor (without the method's weight).
    """
    _check_pair(student_logits, teacher_logits)
    log_q = F.log_softmax(_std_normalised(student_logits), dim=1)
    p = F.softmax(_std_normalised(teacher_logits.detach()), dim=1)
    return F.kl_div(log_q, p, reduction="batchmean")


def mixkd_cross_entropy(student_logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    r"""The reference's classification term: ``-(1/B) sum_b sum_c y_{b,c} log softmax(s_b / std(s_b))_c`` with
    mixed (soft) targets ``y`` (hchoi71/MIX-KD ``distiller_zoo/MIXSTD.py``, the ``CLS`` part of ``MIXSTDLoss``)."""
    log_q = F.log_softmax(_std_normalised(student_logits), dim=1)
    return -(log_q * soft_targets).sum() / student_logits.shape[0]
