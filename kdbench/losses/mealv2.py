"""MEAL V2: the ensemble soft target, the similarity loss to it and the discriminator's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mealv2_loss", "mealv2_discriminator_loss", "mealv2_soft_target"]


def _working_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs, the input's own dtype otherwise (float64 stays float64)."""
    return torch.promote_types(tensor.dtype, torch.float32)


def _check_members(student_logits: torch.Tensor, member_logits: torch.Tensor) -> None:
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must be (B, C), got shape {tuple(student_logits.shape)}")
    if member_logits.dim() != 3 or member_logits.shape[1:] != student_logits.shape:
        raise ValueError("member_logits must be (K, B, C) with (B, C) the student's shape, got "
                         f"{tuple(member_logits.shape)} and {tuple(student_logits.shape)}")


def mealv2_soft_target(member_logits: torch.Tensor) -> torch.Tensor:
    r"""The ensemble's soft label: the mean over the ``K`` teachers of their softmax at temperature 1.

    .. math::

        q_{b,c} = \frac{1}{K} \sum_{k=1}^{K} \mathrm{softmax}(z^{(k)}_b)_c

    Averaged after the softmax (not a softmax of averaged logits), as MEAL V2's
    ``extensions/teacher_wrapper.py`` (``ModelDistillationWrapper.forward`` with ``combine``) does.

    Args:
        member_logits: ``(K, B, C)`` logits of every teacher (``ModelOutput.member_logits``), treated as constants.

    Returns:
        ``(B, C)`` probabilities (rows sum to 1).
    """
    if member_logits.dim() != 3:
        raise ValueError(f"member_logits must be (K, B, C), got shape {tuple(member_logits.shape)}")
    members = member_logits.detach()
    return F.softmax(members, dim=2, dtype=_working_dtype(members)).mean(dim=0)


def mealv2_loss(student_logits: torch.Tensor, member_logits: torch.Tensor) -> torch.Tensor:
    r"""MEAL V2's similarity loss: cross-entropy from the ensemble's soft label to the student, no hard labels.

    .. math::

        \mathcal{L}_{sim} = -\frac{1}{B} \sum_{b=1}^{B} \sum_{c=1}^{C} q_{b,c} \log \mathrm{softmax}(s_b)_c

    with ``q`` = :func:`mealv2_soft_target` (mean of the teachers' probabilities at T 1). It equals
    ``KL(q || softmax(s))`` plus the (constant) entropy of ``q``, so its gradient is the KL divergence's.

    Source: Shen & Savvides, "MEAL V2: Boosting Vanilla ResNet-50 to 80%+ Top-1 Accuracy on ImageNet without
    Tricks", arXiv:2009.08453. Reduction as szq0214/MEAL-V2 ``extensions/kd_loss.py`` (``KLLoss.forward`` in
    training mode: ``-dot(q, log_softmax(s))`` per sample, batch mean); no temperature.

    Args:
        student_logits: ``(B, C)`` student logits; gradients flow into these.
        member_logits: ``(K, B, C)`` logits of the ``K`` teachers (a single teacher: ``K = 1``), detached.

    Returns:
        Scalar loss tensor.
    """
    _check_members(student_logits, member_logits)
    target = mealv2_soft_target(member_logits)
    log_q = F.log_softmax(student_logits, dim=1, dtype=_working_dtype(student_logits))
    return -(target.to(log_q.dtype) * log_q).sum(dim=1).mean()


def mealv2_discriminator_loss(scores: torch.Tensor) -> torch.Tensor:
    r"""The discriminator's binary cross-entropy on its two scores per input.

    ``scores`` is the discriminator's ``(2B, 2)`` output on the student's logits stacked above the teachers'
    mean logits (``torch.cat([s, mean_k z_k])`` along the batch). The targets are ``[1, 0]`` for each of the
    first ``B`` rows (student) and ``[0, 1]`` for each of the last ``B`` (teachers); the loss is
    ``BCEWithLogits`` averaged over all ``2B x 2`` entries:

    .. math::

        \mathcal{L}_{disc} = \frac{1}{4B} \sum_{i=1}^{2B} \sum_{j=1}^{2}
            -\bigl[y_{ij} \log \sigma(d_{ij}) + (1 - y_{ij}) \log (1 - \sigma(d_{ij}))\bigr]

    Source: szq0214/MEAL-V2 ``loss.py`` (``discriminatorLoss``: ``nn.BCEWithLogitsLoss`` with the targets
    ``[[1, 0]] * (N // 2) + [[0, 1]] * (N // 2)`` over the ``N = 2B`` stacked rows).

    Args:
        scores: ``(2B, 2)`` discriminator outputs, student rows first.

    Returns:
        Scalar loss tensor.
    """
    if scores.dim() != 2 or scores.shape[1] != 2 or scores.shape[0] % 2:
        raise ValueError(f"scores must be (2B, 2), student rows first, got shape {tuple(scores.shape)}")
    half = scores.shape[0] // 2
    dtype = _working_dtype(scores)
    target = torch.zeros(scores.shape, dtype=dtype, device=scores.device)
    target[:half, 0] = 1.0
    target[half:, 1] = 1.0
    return F.binary_cross_entropy_with_logits(scores.to(dtype), target)
