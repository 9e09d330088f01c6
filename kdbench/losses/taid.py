"""TAID: temporally adaptive interpolated distillation (the loss at a given interpolation time t)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kd import _check_pair

__all__ = ["taid_loss"]


def taid_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    t: float | torch.Tensor = 0.4,
) -> torch.Tensor:
    r"""Cross-entropy from the interpolated target ``p_t`` to the student.

    .. math::

        p_t = \mathrm{softmax}\bigl((1 - t)\, \mathrm{sg}(s) + t\, z^T\bigr), \qquad
        \mathcal{L}_{TAID} = -\frac{1}{B} \sum_{b=1}^{B} \sum_{c=1}^{C} p_{t,b,c} \log \mathrm{softmax}(s)_{b,c}

    where ``sg`` stops the gradient: the target moves from the student's own prediction (``t = 0``) to
    the teacher's (``t = 1``). The interpolation is of logits, as the reference code does it. The loss
    omits the target's entropy, as the reference's ``forward_kl`` does, so its value is a cross-entropy
    (same gradient as the KL divergence).

    Source: Shing, Misaki, Bao, Yokoi & Akiba, "TAID: Temporally Adaptive Interpolated Distillation for
    Efficient Knowledge Transfer in Language Models", ICLR 2025 (arXiv:2501.16937). Computation follows
    SakanaAI/TAID ``src/distil_losses/taid.py`` (``TAID.compute_loss``) and ``src/distil_losses/fkl.py``
    (``forward_kl``): no temperature; softmaxes in (at least) float32. The schedule of ``t`` is not part of
    this function; see ``kdbench.methods.taid``. For classification every sample is one "token", so the
    reference's token mask (all ones here) reduces to the batch mean, and its infinite-logit masking
    (for padded vocabulary entries) never applies.

    Args:
        student_logits: ``(B, C)`` student logits; gradients flow into these.
        teacher_logits: ``(B, C)`` teacher logits, treated as a constant (detached).
        t: interpolation time in ``[0, 1]`` (a float or a scalar tensor).

    Returns:
        Scalar loss tensor.
    """
    _check_pair(student_logits, teacher_logits)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    mixed = (1 - t) * student_logits.detach() + t * teacher_logits.detach()
    target = F.softmax(mixed, dim=1, dtype=dtype)
    log_q = F.log_softmax(student_logits, dim=1, dtype=dtype)
    return -(target * log_q).sum(dim=1).mean()
