"""TGeo-KD: the trilateral-geometry features and the sample-wise fused KD / CE loss (Hu et al., ICLR 2024,
"Less or More From Teacher: Exploiting Trilateral Geometry for Knowledge Distillation", arXiv:2312.15112v2).

Equation numbers are the paper's (arXiv v2, Sec. 2 and 3.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["tgeokd_loss"]


def trilateral_features(student_probs: torch.Tensor, teacher_probs: torch.Tensor, class_means: torch.Tensor,
                        target: torch.Tensor) -> torch.Tensor:
    r"""The feature vector :math:`\Delta_i` of every sample, Eq. (10), shape ``(B, 9C)``.

    With :math:`S_i` the student's and :math:`T_i` the teacher's class probabilities (softmax at temperature 1,
    Sec. 3.1), :math:`G_i` the one-hot label and :math:`\bar T_{c_i}` the teacher's mean prediction over the
    training samples of the sample's class:

    .. math::

        e^{sg}_i = G_i - S_i,\quad e^{tg}_i = G_i - T_i,\quad e^{st}_i = T_i - S_i \qquad \text{(Eq. 6)}

        e^{\bar t g}_i = G_i - \bar T_{c_i},\quad e^{s \bar t}_i = \bar T_{c_i} - S_i \qquad
            \text{(Eq. 8, the edges of the triplet } (S_i, \bar T_{c_i}, G_i))

        \Delta_i = [e^{sg}_i \oplus e^{tg}_i \oplus e^{st}_i \oplus e^{\bar t g}_i \oplus e^{s \bar t}_i
                    \oplus S_i \oplus T_i \oplus \bar T_{c_i} \oplus G_i] \qquad \text{(Eq. 10)}

    Eq. (10) is Eq. (7) (intra-sample, :math:`\Delta^{STG}_i`) joined with Eq. (8) (inter-sample,
    :math:`\Delta^{S\bar TG}_i`) without the repeated :math:`e^{sg}_i`, :math:`S_i`, :math:`G_i` (Eq. 9), in this
    order. The edges are the difference vectors themselves, not their lengths.

    Args:
        student_probs: ``(B, C)`` student probabilities.
        teacher_probs: ``(B, C)`` teacher probabilities.
        class_means: ``(K, C)`` teacher class-mean probabilities, one row per class.
        target: ``(B,)`` integer labels.
    """
    if student_probs.dim() != 2 or teacher_probs.shape != student_probs.shape:
        raise ValueError(f"student and teacher probabilities must be (B, C) of the same shape, got "
                         f"{tuple(student_probs.shape)} and {tuple(teacher_probs.shape)}")
    if class_means.dim() != 2 or class_means.shape[1] != student_probs.shape[1]:
        raise ValueError(f"class_means must be (K, {student_probs.shape[1]}), got {tuple(class_means.shape)}")
    s, t = student_probs, teacher_probs
    t_bar = class_means[target.reshape(-1)].to(s.dtype)
    g = F.one_hot(target.reshape(-1), s.shape[1]).to(s.dtype)
    return torch.cat([g - s, g - t, t - s, g - t_bar, t_bar - s, s, t, t_bar, g], dim=1)


def sample_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    r"""Eq. (1) per sample, shape ``(B,)``: :math:`\tau^2\,\mathrm{KL}(\sigma(z^t/\tau)\,\|\,\sigma(z^s/\tau))`
    (the teacher is a constant target)."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return temperature**2 * (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)


def tgeokd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                 alpha: torch.Tensor, temperature: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The two halves of Eq. (3): ``(mean_i alpha_i L^KD_i, mean_i (1 - alpha_i) L^GT_i)``.

    :math:`L^{KD}_i` is Eq. (1) (:func:`sample_kd`), :math:`L^{GT}_i` the cross-entropy of Eq. (2) (temperature
    1). Gradients reach ``alpha`` as given (the caller detaches it where only the student should learn)."""
    if student_logits.dim() != 2 or teacher_logits.shape != student_logits.shape:
        raise ValueError(f"student and teacher logits must be (B, C) of the same shape, got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    alpha = alpha.reshape(-1)
    if alpha.numel() != student_logits.shape[0]:
        raise ValueError(f"alpha must hold one ratio per sample ({student_logits.shape[0]}), got {alpha.numel()}")
    kd = sample_kd(student_logits, teacher_logits, temperature)
    ce = F.cross_entropy(student_logits, target.reshape(-1), reduction="none")
    return (alpha * kd).mean(), ((1 - alpha) * ce).mean()


def tgeokd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                alpha: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    r"""The sample-wise fused distillation loss, Eq. (3) (the inner objective of Eq. 5):

    .. math::

        \mathcal{L} = \frac{1}{N} \sum_{i=1}^{N} \alpha_i\, \tau^2\, \mathrm{KL}\big(\sigma(z^t_i/\tau)\,\|\,
            \sigma(z^s_i/\tau)\big) + (1 - \alpha_i)\, \mathrm{CE}(z^s_i, y_i)

    Source: Hu et al., ICLR 2024 (arXiv:2312.15112v2), Eqs. (1)-(3); no reference code is published. The
    paper's CIFAR-100 temperature is 4.0 (Sec. 4.1).

    Args:
        student_logits: ``(B, C)`` student logits; gradients flow into these.
        teacher_logits: ``(B, C)`` teacher logits (a constant target).
        target: ``(B,)`` integer labels.
        alpha: ``(B,)`` fusion ratios in (0, 1).
        temperature: :math:`\tau > 0` of the KD term (the CE term is at temperature 1).
    """
    kd, ce = tgeokd_terms(student_logits, teacher_logits, target, alpha, temperature)
    return kd + ce
