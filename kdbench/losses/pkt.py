"""Probabilistic knowledge transfer (PKT) loss."""

from __future__ import annotations

import torch

__all__ = ["pkt_loss"]


def _conditional_probabilities(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
    x = torch.where(torch.isnan(x), torch.zeros_like(x), x)
    similarity = (x @ x.t() + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


def pkt_loss(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    r"""Probabilistic knowledge transfer with the cosine-similarity kernel.

    Rows are L2-normalised (:math:`x / (\lVert x\rVert + \epsilon)`, NaNs set to 0), the cosine similarities
    mapped to :math:`[0, 1]` by :math:`(c + 1) / 2` and each row turned into a distribution
    :math:`p_{ij} = K_{ij} / \sum_k K_{ik}`; the loss is

    .. math::

        \mathcal{L}_{PKT} = \frac{1}{B^2} \sum_{i,j} p^T_{ij} \log \frac{p^T_{ij} + \epsilon}{p^S_{ij} + \epsilon}

    (a mean over all ``B x B`` entries, diagonal included).

    Source: Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer",
    ECCV 2018. Computation as mdistiller ``mdistiller/distillers/PKT.py`` (``pkt_loss``), identical to
    RepDistiller ``distiller_zoo/PKT.py`` (``PKT.cosine_similarity_loss``); ``eps=1e-7`` as both.

    Args:
        student_embedding: ``(B, D_S)`` student vectors (mdistiller: the pooled embedding).
        teacher_embedding: ``(B, D_T)`` teacher vectors, treated as constants (detached); ``D_T`` may differ.
        eps: stabiliser of the normalisation and of the log ratio.
    """
    if student_embedding.shape[0] != teacher_embedding.shape[0]:
        raise ValueError(f"batch sizes differ: {student_embedding.shape[0]} and {teacher_embedding.shape[0]}")
    p_s = _conditional_probabilities(student_embedding.flatten(1), eps)
    p_t = _conditional_probabilities(teacher_embedding.detach().flatten(1), eps)
    return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))
