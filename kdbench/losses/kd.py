"""Hinton knowledge distillation (KD) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .logit_stand import zscore_logits

__all__ = ["kd_loss"]


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 4.0,
    logit_stand: bool = False,
) -> torch.Tensor:
    r"""Temperature-scaled KL divergence between teacher and student.

    .. math::

        \mathcal{L}_{KD} = \frac{T^2}{B} \sum_{b=1}^{B} \sum_{c=1}^{C}
            p^T_{b,c} \left( \log p^T_{b,c} - \log p^S_{b,c} \right),
        \qquad p^T = \mathrm{softmax}(t / T),\; p^S = \mathrm{softmax}(s / T)

    i.e. ``KL(softmax(t/T) || softmax(s/T))`` summed over classes, averaged over
    the batch, multiplied by ``T**2``.

    Source: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
    Network", arXiv:1503.02531 (2015). Reduction and scaling follow
    megvii-research/mdistiller, ``mdistiller/distillers/KD.py``, function
    ``kd_loss`` (``F.kl_div(..., reduction="none").sum(1).mean() * T**2``);
    the default ``temperature=4.0`` is mdistiller's ``CFG.KD.TEMPERATURE``.

    Args:
        student_logits: ``(B, C)`` student logits; gradients flow into these.
        teacher_logits: ``(B, C)`` teacher logits. Treated as a constant target
            (detached), as in mdistiller where the teacher forward runs under
            ``torch.no_grad()``.
        temperature: softening temperature ``T > 0``.
        logit_stand: Z-score both logit vectors (:func:`zscore_logits`) before dividing by ``T`` (Sun et al.,
            "Logit Standardization in Knowledge Distillation", CVPR 2024). The ``T**2`` factor is kept, as in
            their ``kd_loss`` (sunshangquan/logit-standardization-KD, ``mdistiller/distillers/KD.py``).

    Returns:
        Scalar loss tensor (the ``CE`` term is *not* included).
    """
    _check_pair(student_logits, teacher_logits)
    teacher_logits = teacher_logits.detach()
    if logit_stand:
        student_logits, teacher_logits = zscore_logits(student_logits), zscore_logits(teacher_logits)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    per_sample = F.kl_div(log_p_student, p_teacher, reduction="none").sum(dim=1)
    return per_sample.mean() * temperature**2


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.dim() != 2:
        raise ValueError(
            f"student_logits must be (B, C), got shape {tuple(student_logits.shape)}"
        )
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            "teacher_logits and student_logits must have the same shape, got "
            f"{tuple(teacher_logits.shape)} and {tuple(student_logits.shape)}"
        )
