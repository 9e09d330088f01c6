r"""TRG: "Knowledge Distillation via Token-level Relationship Graph" (Zhang, Liu, He; arXiv 2306.12442).

No reference code is published and the paper's method section could not be retrieved, so the equations below
are read from the paper's own summary of its losses as secondary sources transcribe them (its total loss, the
Gaussian k-NN adjacency, the local, global and contextual terms); the paper's equation numbers are not known to
kdbench, so each term is named instead. Everything marked *kdbench* is kdbench's own choice.

The graph's nodes are ``N`` tokens (feature-map positions) sampled across the batch; ``t_i`` is a token of a
model in its own width, ``z_i`` its projection to the common width.

- **Node alignment** (the paper's global relationship loss), InfoNCE between the student's and the teacher's
  projected nodes, the same token being the positive:
  :math:`L_{node} = -\frac1N\sum_i \log \frac{\exp(\cos(z^S_i, z^T_i)/\tau_g)}{\sum_j \exp(\cos(z^S_i, z^T_j)/\tau_g)}`
  (*kdbench*: mean over nodes; the summary writes a sum).
- **Edge alignment** (the paper's local preserving loss) on each model's k-NN graph with Gaussian edges,
  :math:`A_{ij} = \exp(-\lVert \hat t_i - \hat t_j\rVert^2 / 2\sigma)` for :math:`j \in kNN(i)` (self excluded),
  0 otherwise; :math:`P_i = \mathrm{softmax}_j(A_{ij})` over all nodes;
  :math:`L_{edge} = \frac1N\sum_i \mathrm{KL}(P^T_i \,\Vert\, P^S_i)` (*kdbench*: tokens L2-normalised before
  the distances, so that ``sigma`` means the same for any width; the teacher's row is the target, as in every KD
  loss of kdbench, where the secondary summary writes the arguments the other way round; mean over nodes).
- **Contextual loss** (token-wise, inner-instance): per image, over its ``K`` sampled tokens in each model's own
  width :math:`D`, :math:`CS = \mathrm{softmax}(F F^\top / \sqrt{D})` (row-wise) and
  :math:`L_{ctx} = \mathrm{MSE}(CS^S, CS^T)` (mean over images and matrix entries).

The method (kdbench/methods/trg.py) adds CE and logit KD: ``L = CE + kd * KD + context * L_ctx + edge * L_edge +
node * L_node`` (the paper's :math:`L_{logit} + \alpha L_{inner} + \beta L_{local} + \gamma L_{global}`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["trg_node_loss", "trg_edge_loss", "trg_context_loss", "trg_loss"]


def trg_node_loss(student_nodes: torch.Tensor, teacher_nodes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Node alignment: InfoNCE over ``(N, P)`` projected nodes, cosine similarity over ``temperature``; the
    student's node ``i`` against every teacher node, the teacher's node ``i`` the positive. Mean over nodes."""
    s = F.normalize(student_nodes, dim=1)
    t = F.normalize(teacher_nodes, dim=1)
    logits = s @ t.t() / temperature
    return F.cross_entropy(logits, torch.arange(len(s), device=s.device))


def _knn_gaussian_graph(tokens: torch.Tensor, neighbours: int, sigma: float) -> torch.Tensor:
    t = F.normalize(tokens, dim=1)
    d2 = (t.unsqueeze(1) - t.unsqueeze(0)).pow(2).sum(-1)  # (N, N) squared distances, exact (no expansion)
    far = torch.eye(len(t), dtype=torch.bool, device=t.device)
    nearest = d2.masked_fill(far, math.inf).topk(min(neighbours, len(t) - 1), dim=1, largest=False).indices
    keep = torch.zeros_like(far).scatter_(1, nearest, True)
    return torch.where(keep, torch.exp(-d2 / (2.0 * sigma)), torch.zeros_like(d2))


def trg_edge_loss(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, neighbours: int = 8,
                  sigma: float = 1.0) -> torch.Tensor:
    """Edge alignment: each model's k-NN graph of its ``(N, D)`` tokens (L2-normalised, Gaussian edge weights,
    non-edges 0), each row softmax-normalised over all ``N`` nodes; KL(teacher row || student row), mean over
    rows. ``neighbours`` is capped at ``N - 1``."""
    p_t = F.softmax(_knn_gaussian_graph(teacher_tokens, neighbours, sigma), dim=1)
    log_p_s = F.log_softmax(_knn_gaussian_graph(student_tokens, neighbours, sigma), dim=1)
    return (p_t * (p_t.log() - log_p_s)).sum(1).mean()


def trg_context_loss(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor) -> torch.Tensor:
    """Contextual loss over ``(B, K, D)`` tokens: per image, row-softmax of ``F F^T / sqrt(D)`` in each model's
    own width ``D``; the mean squared difference of the two ``(B, K, K)`` matrices."""
    def context(f):
        return F.softmax(f @ f.transpose(1, 2) / math.sqrt(f.shape[-1]), dim=-1)

    return F.mse_loss(context(student_tokens), context(teacher_tokens))


def trg_loss(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, student_nodes: torch.Tensor,
             teacher_nodes: torch.Tensor, node_temperature: float = 0.1, neighbours: int = 8, sigma: float = 1.0,
             node_weight: float = 1.0, edge_weight: float = 1.0, context_weight: float = 1.0) -> torch.Tensor:
    """The three TRG terms, weighted: ``(B, K, D)`` sampled tokens of each model in its own width and their
    ``(B*K, P)`` projections (the same order, flattened image by image)."""
    flat_s, flat_t = student_tokens.flatten(0, 1), teacher_tokens.flatten(0, 1)
    return (node_weight * trg_node_loss(student_nodes, teacher_nodes, node_temperature)
            + edge_weight * trg_edge_loss(flat_s, flat_t, neighbours, sigma)
            + context_weight * trg_context_loss(student_tokens, teacher_tokens))
