"""DisWOT's two similarities (Dong, Li & Wei, CVPR 2023): the training-free student score and the DisWOT-dagger
distillation terms.

Both compare row-normalised Gram matrices of teacher and student with a squared Frobenius distance:

- **relation** (sample relations): ``G = rownorm(F F^T)``, the ``B x B`` similarity of the flattened last stage
  maps of a batch (the references' ``feats[-2]``, the map before global pooling for ResNet / VGG), distance over
  ``B^2``; this is SP's loss (Tung & Mori, ICCV 2019) on that one map;
- **semantic** (feature semantics): for each class ``k``, the channel Gram ``A_k = rownorm(g_k g_k^T)`` of the
  gradient ``g_k`` of the cross-entropy with respect to row ``k`` of the final linear layer's weight (the
  reference calls it the fc layer's "grad-cam"), distance over ``c K`` (``K`` classes, ``c`` channels per row of
  ``A_k``); ICKD's inter-channel correlation loss applied to those gradients.

DisWOT's score for a candidate student is ``-(relation + semantic)`` (higher is better).

Source: lliai/DisWOT-CVPR2023 (also lilujunai/DisWOT-CVPR2023) @ dffe4e6118a2ab6a5ed89c9495e1ee2b6c808afa:
README "Core Code" (``batch_similarity``, ``channel_similarity``), ``distiller_zoo/SP.py`` (``Similarity``),
``distiller_zoo/ICKD.py`` (``ICKDLoss.batch_loss``), ``exps/parse_nb201_distill.py`` (``compute_diswot_procedure``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .sp import sp_loss

__all__ = ["diswot_loss", "diswot_relation_loss", "diswot_semantic_loss"]


def classifier_gradient(logits: torch.Tensor, embedding: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""The gradient of the batch-mean cross-entropy with respect to the weight of a linear classifier,
    ``logits = embedding W^T + b``, in closed form:

    .. math::

        \frac{\partial\, \mathrm{CE}}{\partial W} = \frac{1}{B} \bigl(\mathrm{softmax}(z) - \mathrm{onehot}(y)\bigr)^\top h
        \qquad (K \times C)

    It equals ``W.grad`` after ``F.cross_entropy(logits, targets).backward()`` (the reference's one backward per
    network, ``fc.weight.grad``) without a backward through the network, and it stays differentiable in ``logits``
    and ``embedding`` (DisWOT-dagger trains through it).

    Args:
        logits: ``(B, K)`` class scores of the linear classifier.
        embedding: ``(B, C)`` its input (the pooled pre-logit features).
        targets: ``(B,)`` integer labels.
    """
    probs = logits.softmax(dim=1)
    delta = probs - F.one_hot(targets.long(), logits.shape[1]).to(probs.dtype)
    return delta.t() @ embedding.to(probs.dtype) / logits.shape[0]


def diswot_relation_loss(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    r"""Sample-relation distance of DisWOT (the relation similarity's negative):

    .. math::

        \mathcal{L}_{rel} = \frac{1}{B^2} \bigl\lVert \mathrm{rownorm}(F_T F_T^\top) - \mathrm{rownorm}(F_S F_S^\top) \bigr\rVert_F^2

    with ``F`` the ``(B, C H W)`` flattened maps (the widths and sizes of the two maps may differ). The reference's
    ``batch_similarity`` (README "Core Code") and ``Similarity.similarity_loss`` (``distiller_zoo/SP.py``, as the
    zen search space's DISWOT branch calls it on ``feats[-2]``) compute exactly this; it is :func:`sp_loss` on one
    map.

    Args:
        student_map: ``(B, ...)`` the student's last stage map.
        teacher_map: ``(B, ...)`` the teacher's.
    """
    return sp_loss([student_map], [teacher_map])


def diswot_semantic_loss(student_grad: torch.Tensor, teacher_grad: torch.Tensor) -> torch.Tensor:
    r"""Semantic distance of DisWOT (the semantic similarity's negative) between the classifier-weight gradients
    ``g`` (``K x C``, see :func:`classifier_gradient`) of student and teacher:

    .. math::

        \mathcal{L}_{sem} = \frac{1}{c K} \sum_{k=1}^{K}
            \bigl\lVert \mathrm{rownorm}(a^S_k a^{S\top}_k) - \mathrm{rownorm}(a^T_k a^{T\top}_k) \bigr\rVert_F^2

    where ``a_k`` is row ``k`` of ``g`` viewed as ``c`` channels of ``C / c`` values each, ``c = gcd(C_S, C_T)``.
    The reference views both gradients with one network's width (``f.view(K, ch, -1)``): the student's in the
    README's ``channel_similarity``, the teacher's in ``ICKDLoss.batch_loss`` as ``compute_diswot_procedure`` calls
    it. Either runs only when the other width is a multiple of that one, and then ``ch`` is the smaller width,
    which is ``gcd(C_S, C_T)``; with equal widths each ``a_k`` is ``C x 1`` and its Gram the outer product
    ``g_k g_k^T``. Taking ``c = gcd`` gives the reference's value wherever the reference runs and extends it to
    widths that are not multiples of each other (ShuffleV1's 960 channels against 256).

    Args:
        student_grad: ``(K, C_S)`` (or ``(K, C_S, 1, 1)``, the reference's unsqueezed form).
        teacher_grad: ``(K, C_T)``; the same number of classes ``K``.
    """
    classes = student_grad.shape[0]
    if teacher_grad.shape[0] != classes:
        raise ValueError(f"diswot_semantic_loss: the gradients cover {classes} and {teacher_grad.shape[0]} classes")
    g_s, g_t = student_grad.reshape(classes, -1), teacher_grad.reshape(classes, -1)
    channels = math.gcd(g_s.shape[1], g_t.shape[1])
    gram = lambda g: F.normalize(torch.bmm(a := g.reshape(classes, channels, -1), a.transpose(1, 2)), dim=2)
    diff = gram(g_s) - gram(g_t)
    return diff.pow(2).sum() / (channels * classes)


def diswot_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, student_grad: torch.Tensor,
                teacher_grad: torch.Tensor, relation_weight: float = 1.0, semantic_weight: float = 1.0) -> torch.Tensor:
    """``relation_weight * diswot_relation_loss + semantic_weight * diswot_semantic_loss``. With the unit weights
    (the defaults) it is minus DisWOT's training-free score: ``exps/parse_nb201_distill.py`` adds the two negated
    terms, ``score_sp + score_ickd``, unweighted."""
    return (relation_weight * diswot_relation_loss(student_map, teacher_map)
            + semantic_weight * diswot_semantic_loss(student_grad, teacher_grad))
