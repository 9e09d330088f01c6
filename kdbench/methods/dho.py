"""DHO: dual-head optimisation (Kang et al., "Simple yet Effective Semi-supervised Knowledge Distillation from
Vision-Language Models via Dual-Head Optimization", arXiv 2505.07675; code erjui/DHO @ 846de75).

The student gets a second linear head on its pooled embedding: its own classifier ``h_ce`` learns from labels, the
new ``h_kd`` from the teacher, on labelled and unlabelled images alike (``train_others.py`` / ``train_imgnet_semi.py``):

    L = ce_weight * CE(h_ce(x_l), y) + kd_weight * [KL_T(h_kd(x_l) || t(x_l)) + KL_T(h_kd(x_u) || t(x_u))]

with ``KL_T`` the batch-mean KL divergence at temperature T = 2 times T^2, taken over the labelled and the unlabelled
images of the batch apart (each its own batch mean). The student is scored on

    p = a * softmax(h_ce(x)) + (1 - a) * softmax(h_kd(x) / b)

with (a, b) chosen on a validation split carved from the training data (never the test set) before each evaluation:
the reference's grid a in {0, 0.05, ..., 1}, b in {0.5, 0.75, 1, 1.25, 1.5, 2, 4}, the first best in its order (b
outer, a inner, strictly better replaces). The choice is recorded (``history[*].selected``, ``method.selected``)
and kept in the checkpoint. ``search=false`` scores with ``mix_alpha`` / ``mix_beta`` instead (the ImageNet script:
0.5 / 0.5).

Defaults: the few-shot script's 0.5 / 0.5 weighting and T 2 (``train_others.py``); its ImageNet script weights
1 / 1. Semi-supervised data come from ``dataset.labelled_fraction`` (kdbench/data/splits.py); each batch is a
labelled batch followed by an unlabelled one of the same size, in one forward, as ``train_imgnet_semi.py``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses.dho import dho_terms
from .base import UNLABELLED, Method, register_method

ALPHAS = tuple(round(0.05 * k, 2) for k in range(21))
BETAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0)


def mixed_probabilities(ce_logits: torch.Tensor, kd_logits: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """a * softmax(h_ce) + (1 - a) * softmax(h_kd / b)."""
    return alpha * F.softmax(ce_logits.float(), dim=1) + (1 - alpha) * F.softmax(kd_logits.float() / beta, dim=1)


def search_mixture(ce_logits: torch.Tensor, kd_logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float, float]:
    """(a, b, accuracy %) of the best grid point on these outputs, the reference's order and tie rule."""
    best = (0.0, 1.0, -1.0)
    ce = F.softmax(ce_logits.float(), dim=1)
    for beta in BETAS:
        kd = F.softmax(kd_logits.float() / beta, dim=1)
        for alpha in ALPHAS:
            correct = ((alpha * ce + (1 - alpha) * kd).argmax(1) == targets).sum().item()
            accuracy = 100.0 * correct / max(len(targets), 1)
            if accuracy > best[2]:
                best = (alpha, beta, accuracy)
    return best


@register_method("dho")
class DHO(Method):
    needs = frozenset({"logits", "embedding"})
    teacher_needs = frozenset({"logits"})
    uses_unlabelled = True
    evaluation_needs = frozenset({"logits", "embedding"})
    ranges = {"mix_alpha": "[0, 1]", "mix_beta": "> 0"}

    def __init__(self, temperature: float = 2.0, ce_weight: float = 0.5, kd_weight: float = 0.5, search: bool = True,
                 mix_alpha: float = 0.5, mix_beta: float = 0.5):
        super().__init__()
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight
        self.search, self.mix_alpha, self.mix_beta = search, mix_alpha, mix_beta
        self.needs_validation = search  # the (a, b) search needs a validation split
        self.kd_head: nn.Linear | None = None
        # the mixture the student is scored with: chosen on validation data, kept in checkpoints
        self.register_buffer("alpha", torch.tensor(float(mix_alpha)))
        self.register_buffer("beta", torch.tensor(float(mix_beta)))

    def build(self, student, teacher, context):
        self.kd_head = nn.Linear(student.embedding.shape[1], context.num_classes)

    def forward(self, student, teacher, batch, progress):
        return dho_terms(student.logits, self.kd_head(student.embedding), teacher.logits, batch.targets,
                        temperature=self.temperature, ce_weight=self.ce_weight, kd_weight=self.kd_weight)

    def predict(self, student):
        return mixed_probabilities(student.logits, self.kd_head(student.embedding), float(self.alpha), float(self.beta))

    @torch.no_grad()
    def select_on_validation(self, student, targets):
        alpha, beta, accuracy = search_mixture(student.logits, self.kd_head(student.embedding), targets)
        self.alpha.fill_(alpha)
        self.beta.fill_(beta)
        return {"alpha": alpha, "beta": beta, "validation_top1": round(accuracy, 4)}


__all__ = ["DHO", "UNLABELLED", "mixed_probabilities", "search_mixture"]
