"""Plackett-Luce distillation (PLD) loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pld_loss", "plackett_luce_loss", "teacher_optimal_permutation"]


def plackett_luce_loss(
    student_logits: torch.Tensor,
    permutation: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    r"""Rank-weighted negative Plackett-Luce log-likelihood of a fixed ranking.

    .. math::

        \mathcal{L} = \frac{1}{B} \sum_{b=1}^{B} \sum_{k=1}^{C} w_{b,k}
            \Bigl( \log \sum_{l=k}^{C} e^{s_{b,\pi_{b,l}}} - s_{b,\pi_{b,k}} \Bigr)

    Each bracket is the negative log-probability that the student, choosing
    among the classes not yet ranked, picks the class ``pi_k`` at step ``k``.
    ``w = (1, 0, ..., 0)`` with the label at rank 1 gives cross-entropy;
    uniform ``w`` gives ListMLE (Xia et al., ICML 2008).

    Computed without loops over classes: the student logits are gathered into
    rank order and the suffix log-sum-exp is a reversed
    ``torch.logcumsumexp``, which is stable for large logits and exactly
    translation invariant per row.

    Source: Bassam, Zhu & Bian, "PLD: A Choice-Theoretic List-Wise Knowledge
    Distillation", arXiv:2506.12542 (NeurIPS 2025), Sec. 4.2 and the reference
    listing in Appendix C (no code repository is published).

    Args:
        student_logits: ``(B, C)`` student logits.
        permutation: ``(B, C)`` integer class indices, ``permutation[b, k]`` is
            the class at rank ``k`` (rank 0 first) for sample ``b``.
        weights: ``(B, C)`` non-negative weight of each *rank* (not class).
            Used as given; gradients flow into it if it requires grad.

    Returns:
        Scalar loss: sum over ranks, mean over the batch.
    """
    if student_logits.dim() != 2:
        raise ValueError(
            f"student_logits must be (B, C), got shape {tuple(student_logits.shape)}"
        )
    if permutation.shape != student_logits.shape or weights.shape != student_logits.shape:
        raise ValueError(
            "permutation and weights must have the shape of student_logits "
            f"{tuple(student_logits.shape)}, got {tuple(permutation.shape)} and "
            f"{tuple(weights.shape)}"
        )
    ranked = student_logits.gather(1, permutation)
    suffix_lse = torch.logcumsumexp(ranked.flip(1), dim=1).flip(1)
    per_rank = suffix_lse - ranked
    return (weights * per_rank).sum(dim=1).mean()


def teacher_optimal_permutation(teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PLD's teacher-optimal ranking: the label first, then descending teacher logit.

    Ties between equal teacher logits are broken by the lower class index
    first (stable sort), so the result is deterministic. (The paper's listing
    uses an unstable ascending sort and reverses it, so its tie order is not
    specified.)

    Args:
        teacher_logits: ``(B, C)`` teacher logits.
        target: ``(B,)`` (or ``(B, 1)``) integer labels.

    Returns:
        ``(B, C)`` int64 class indices per rank.
    """
    target = target.reshape(-1, 1)
    order = torch.argsort(teacher_logits, dim=1, descending=True, stable=True)
    # Stable partition: the label's slot to the front, the others keep their order.
    not_label = (order != target).to(torch.int8)
    return order.gather(1, torch.argsort(not_label, dim=1, stable=True))


def pld_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    r"""Plackett-Luce distillation: teacher-confidence-weighted ListMLE.

    Teacher-optimal permutation ``pi*``: the true label first, then the other
    classes by descending teacher logit. With ``q = softmax(t / tau)`` (the
    teacher only is softened; the student logits enter unscaled):

    .. math::

        \mathcal{L}_{PLD} = \frac{1}{B} \sum_{b=1}^{B} \sum_{k=1}^{C}
            q_{b,\pi^*_k}
            \Bigl( \log \sum_{l=k}^{C} e^{s_{b,\pi^*_l}} - s_{b,\pi^*_k} \Bigr)

    PLD *replaces* cross-entropy (its first rank is a CE term on the label
    weighted by the teacher's probability of the label), so no CE term is to be
    added.

    Source: Bassam, Zhu & Bian, "PLD: A Choice-Theoretic List-Wise Knowledge
    Distillation", arXiv:2506.12542 (NeurIPS 2025): Sec. 4.1 (``pi*``), Sec. 4.2
    (weights ``alpha_k = q^T_{pi*_k}``), Appendix C (reference listing:
    ``create_adjusted_ranking`` / ``plackett_luce_loss``, default
    ``temperature=1.0``; the paper's ImageNet ablation finds ``tau = 1`` best,
    its CIFAR-100 runs use ``tau = 4``). Conventions checked against that
    listing: temperature on the teacher only, sum over ranks, mean over the
    batch. The listing stores ranks in reverse order and uses a forward
    ``logcumsumexp``; this is the same quantity.

    Differences from the listing: the teacher logits are detached here (the
    listing does not detach, relying on the caller's ``torch.no_grad()``
    teacher forward), and ties in teacher logits are ordered deterministically
    (see :func:`teacher_optimal_permutation`).

    Args:
        student_logits: ``(B, C)`` student logits; gradients flow into these.
        teacher_logits: ``(B, C)`` teacher logits (detached).
        target: ``(B,)`` (or ``(B, 1)``) integer labels.
        temperature: ``tau > 0`` for the teacher softmax that gives the weights.

    Returns:
        Scalar loss tensor.
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            "teacher_logits and student_logits must have the same shape, got "
            f"{tuple(teacher_logits.shape)} and {tuple(student_logits.shape)}"
        )
    teacher_logits = teacher_logits.detach()
    permutation = teacher_optimal_permutation(teacher_logits, target)
    weights = F.softmax(teacher_logits / temperature, dim=1).gather(1, permutation)
    return plackett_luce_loss(student_logits, permutation, weights)
