"""Multi-level logit distillation (MLKD) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kd import _check_pair, kd_loss

__all__ = ["mlkd_loss"]

# The temperatures MLKD uses after its base temperature (CFG.KD.TEMPERATURE): 3, 5, 2, 6.
EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)


def _correlation_gap(student_logits, teacher_logits, temperature: float, dim: int) -> torch.Tensor:
    """Squared Frobenius distance of the Gram matrices of softmax(z / T), over classes (dim 0: the C x C
    class correlation) or over samples (dim 1: the B x B batch correlation), divided by that matrix size.
    Computed in at least float32 even under autocast: the gap is a small difference of Gram entries."""
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    with torch.autocast(student_logits.device.type, enabled=False):
        p_s = F.softmax(student_logits.to(dtype) / temperature, dim=1)
        p_t = F.softmax(teacher_logits.to(dtype) / temperature, dim=1)
        if dim == 0:
            gram_s, gram_t = p_s.t() @ p_s, p_t.t() @ p_t
        else:
            gram_s, gram_t = p_s @ p_s.t(), p_t @ p_t.t()
        return ((gram_t - gram_s) ** 2).sum() / gram_s.shape[0]


def _fraction_at_or_below_median(values: torch.Tensor) -> torch.Tensor:
    """Share of entries <= their median (numpy.percentile(values, 50), linear interpolation)."""
    dtype = torch.promote_types(values.dtype, torch.float32)
    values = values.double()
    return (values <= torch.quantile(values, 0.5)).to(dtype).mean()


def mlkd_terms(
    student_weak: torch.Tensor,
    teacher_weak: torch.Tensor,
    student_strong: torch.Tensor,
    teacher_strong: torch.Tensor,
    temperature: float = 4.0,
    logit_stand: bool = False,
) -> dict[str, torch.Tensor]:
    """The instance (``kd``), class-correlation (``cc``) and batch-correlation (``bc``) terms of
    :func:`mlkd_loss`, unweighted; see there for the formulas."""
    _check_pair(student_weak, teacher_weak)
    _check_pair(student_strong, teacher_strong)
    teacher_weak, teacher_strong = teacher_weak.detach(), teacher_strong.detach()
    temps = (temperature, *EXTRA_TEMPERATURES)

    probs = F.softmax(teacher_weak, dim=1)
    sample_share = _fraction_at_or_below_median(probs.max(dim=1).values)
    class_share = _fraction_at_or_below_median(probs.sum(dim=0))

    def kd(s, t, T):
        return kd_loss(s, t, temperature=T, logit_stand=logit_stand)

    kd_weak = sum(kd(student_weak, teacher_weak, T) for T in temps) * sample_share
    kd_strong = (sum(kd(student_strong, teacher_strong, T) for T in temps[:3])
                 + sum(kd(student_weak, teacher_weak, T) for T in temps[3:]))
    cc = sum(_correlation_gap(student_weak, teacher_weak, T, dim=0) for T in temps) * class_share
    bc = sum(_correlation_gap(student_weak, teacher_weak, T, dim=1) for T in temps) * sample_share
    return {"kd": kd_weak + kd_strong, "cc": cc, "bc": bc}


def mlkd_loss(
    student_weak: torch.Tensor,
    teacher_weak: torch.Tensor,
    student_strong: torch.Tensor,
    teacher_strong: torch.Tensor,
    temperature: float = 4.0,
    logit_stand: bool = False,
) -> torch.Tensor:
    r"""Multi-level logit distillation on a weakly and a strongly augmented view of the same images.

    With temperatures :math:`\mathcal{T} = (T, 3, 5, 2, 6)` (``T`` = ``temperature``), ``p = softmax(z / t)``
    for student/teacher logits ``z`` and ``KD_t`` the batch-mean KL times ``t^2`` (:func:`kd_loss`):

    .. math::

        \mathrm{kd} = m_B \sum_{t \in \mathcal{T}} \mathrm{KD}_t(s^w, t^w)
            + \sum_{t \in \{T, 3, 5\}} \mathrm{KD}_t(s^s, t^s) + \sum_{t \in \{2, 6\}} \mathrm{KD}_t(s^w, t^w)

        \mathrm{cc} = m_C \sum_{t} \tfrac{1}{C} \lVert P_t^{w\top} P_t^w - P_s^{w\top} P_s^w \rVert_F^2,
        \qquad
        \mathrm{bc} = m_B \sum_{t} \tfrac{1}{B} \lVert P_t^w P_t^{w\top} - P_s^w P_s^{w\top} \rVert_F^2

    and the loss is ``kd + cc + bc``. The confidence masks follow the reference: a sample is kept when its
    teacher confidence ``max softmax(t^w)`` (``T = 1``) is at most the batch median, a class when its summed
    teacher probability is at most the median over classes (``numpy.percentile(., 50)``, ``<=``).

    Source: Jin, Wang & Lin, "Multi-Level Logit Distillation", CVPR 2023; computation as
    Jin-Ying/Multi-Level-Logit-Distillation ``mdistiller/distillers/KD_ours.py`` (``KD_ours.forward_train``),
    including three properties of that code that the paper's formulas do not show:

    * the instance and batch terms are batch-reduced before the per-sample mask multiplies them (its
      ``reduce=False`` is commented out), and the class term is a sum before the class mask multiplies it,
      so each mask acts through ``mask.mean()``: ``m_B`` and ``m_C`` above are the *shares* of kept samples
      and classes, not per-sample weights;
    * the strong-view instance term uses the weak-view logits at temperatures 2 and 6;
    * the class- and batch-correlation terms of the strong view are computed but not returned, so only the
      weak view contributes to ``cc`` and ``bc``.

    ``logit_stand`` Z-scores the logits of the instance (KD) terms only, as ``MLKD.py`` of
    sunshangquan/logit-standardization-KD (masks and correlation terms use raw logits there).
    The reference's weights (``CFG.KD.LOSS.KD_WEIGHT`` on every term, ``CE_WEIGHT`` on the cross-entropy of
    both views) belong to the training method.

    Args:
        student_weak, teacher_weak: ``(B, C)`` logits on the weak (crop + flip) view.
        student_strong, teacher_strong: ``(B, C)`` logits on the strong (RandAugment) view.
        temperature: base temperature ``T`` (the reference's ``CFG.KD.TEMPERATURE``, 4).
        logit_stand: Z-score logits of the KD terms first (:func:`zscore_logits`).

    Returns:
        Scalar loss (unweighted sum of the three terms; the teacher logits are detached).
    """
    return sum(mlkd_terms(student_weak, teacher_weak, student_strong, teacher_strong,
                          temperature=temperature, logit_stand=logit_stand).values())
