"""ND loss: regularising the student embedding's norm and direction (KD++ / DKD++)."""

from __future__ import annotations

import torch

__all__ = ["nd_loss"]


def nd_loss(
    student_embedding: torch.Tensor,
    teacher_embedding: torch.Tensor,
    class_means: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    r"""Norm-and-direction loss towards the teacher's class-mean embeddings.

    With ``f_s`` the student embedding (projected to the teacher's width where the two differ), ``f_t`` the
    teacher embedding and ``c_y`` the teacher's mean training embedding of class ``y``:

    .. math::

        \mathcal{L}_{ND} = \frac{1}{B} \sum_{b=1}^{B} \left( 1 -
            \frac{\langle f_s^b, \, c_{y_b} / \lVert c_{y_b} \rVert_2 \rangle}
                 {\max(\lVert f_s^b \rVert_2, \lVert f_t^b \rVert_2)} \right)

    The direction term pulls ``f_s`` towards the class-mean direction, the ``max`` normaliser lets its norm grow
    up to (and beyond) the teacher's.
    Source: Wang et al., "Improving Knowledge Distillation via Regularizing Feature Norm and Direction",
    ICCV 2023; computation as ``DirectNormLoss`` in WangYZ1608/Knowledge-Distillation-via-ND ``CIFAR/utils.py``
    (per-sample sum divided by the batch size; the loss weight ``nd_loss_factor`` is left to the caller).

    Args:
        student_embedding: ``(B, D)`` student embeddings; gradients flow into these.
        teacher_embedding: ``(B, D)`` teacher embeddings (detached: only their norms are used).
        class_means: ``(num_classes, D)`` teacher class-mean embeddings.
        target: ``(B,)`` integer class labels.

    Returns:
        Scalar loss tensor.
    """
    if student_embedding.shape != teacher_embedding.shape:
        raise ValueError("student and teacher embeddings must have the same shape (project the student first), got "
                         f"{tuple(student_embedding.shape)} and {tuple(teacher_embedding.shape)}")
    centers = class_means[target.reshape(-1)]
    directions = centers / centers.norm(dim=1, keepdim=True)
    max_norm = torch.maximum(student_embedding.norm(dim=1), teacher_embedding.detach().norm(dim=1))
    return (1 - (student_embedding * directions).sum(dim=1) / max_norm).mean()
