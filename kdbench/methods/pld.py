"""PLD: Plackett-Luce distillation, a list-wise loss that replaces cross-entropy.

The teacher-optimal ranking puts the true label first, then the other classes by descending teacher logit;
rank k carries weight softmax(t / tau) of its class; loss = sum_k w_k (logsumexp_{j>=k} s_pi(j) - s_pi(k)).
There is no separate CE term: with one-hot weights the loss is cross-entropy.
Source: Bassam, Zhu & Bian, "PLD: A Choice-Theoretic List-Wise Knowledge Distillation", NeurIPS 2025
(arXiv:2506.12542), Sec. 4.2 and its Appendix C listing.
"""

from ..losses import pld_loss
from .base import Method, register_method


@register_method("pld")
class PLD(Method):
    def __init__(self, temperature: float = 1.0, weight: float = 1.0):
        super().__init__()
        self.temperature, self.weight = temperature, weight

    def forward(self, student, teacher, batch, progress):
        return {"pld": self.weight * pld_loss(student.logits, teacher.logits, batch.targets, temperature=self.temperature)}
