"""DIST: knowledge distillation from a stronger teacher (relation loss on class probabilities)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kd import _check_pair

__all__ = ["dist_loss"]

_EPS = 1e-8  # the reference's epsilon in the cosine-similarity denominator


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of matching rows: cosine similarity of the row-centred vectors."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + _EPS)


def dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    r"""DIST relation loss: inter-class plus intra-class Pearson correlation distance.

    With ``Y^S = softmax(s / T)`` and ``Y^T = softmax(t / T)`` (``B x C``) and
    ``rho(u, v) = <u - mean u, v - mean v> / (||u - mean u|| ||v - mean v|| + 1e-8)``:

    .. math::

        \mathcal{L}_{inter} = 1 - \frac{1}{B} \sum_{i=1}^{B} \rho(Y^S_{i,:}, Y^T_{i,:}), \qquad
        \mathcal{L}_{intra} = 1 - \frac{1}{C} \sum_{j=1}^{C} \rho(Y^S_{:,j}, Y^T_{:,j})

        \mathcal{L}_{DIST} = T^2 \, (\beta \, \mathcal{L}_{inter} + \gamma \, \mathcal{L}_{intra})

    Source: Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022
    (arXiv:2205.10536). Computation follows hunto/image_classification_sota (the ``classification``
    submodule of hunto/DIST_KD), ``lib/models/losses/dist_kd.py``, class ``DIST`` (same epsilon, same
    ``tau**2`` scaling of both terms). Defaults: ``beta = gamma = 1`` are fixed by that repository's
    ``lib/models/losses/kd_loss.py``; ``temperature = 4`` is its CIFAR-100 setting
    (``configs/strategies/distill/dist_cifar.yaml``: ``kd: dist_t4``); ImageNet uses ``T = 1`` (``kd: dist``).

    Args:
        student_logits: ``(B, C)`` student logits; gradients flow into these.
        teacher_logits: ``(B, C)`` teacher logits, treated as a constant (detached; the reference runs the
            teacher under ``torch.no_grad()``).
        beta: weight of the inter-class (per-sample) relation term.
        gamma: weight of the intra-class (per-class, across the batch) relation term.
        temperature: softening temperature ``T > 0``.

    Returns:
        Scalar loss tensor (without the CE term and without the method's loss weight).
    """
    _check_pair(student_logits, teacher_logits)
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    inter = 1 - _pearson_rows(p_s, p_t).mean()
    intra = 1 - _pearson_rows(p_s.t(), p_t.t()).mean()
    return temperature**2 * (beta * inter + gamma * intra)
