"""DHO's training loss (erjui/DHO @ 846de75, ``train_others.py`` and ``train_imgnet_semi.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.semi import UNLABELLED

__all__ = ["dho_loss"]


def _batchmean_kl(student_logits, teacher_logits, mask, temperature):
    """KL(p_t^T || p_s^T) summed over classes, averaged over the rows in ``mask``, times T^2 (0 with no rows)."""
    rows = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.softmax(teacher_logits / temperature, dim=1),
                    reduction="none").sum(1)
    count = mask.sum()
    return torch.where(count > 0, (rows * mask).sum() / count.clamp(min=1), rows.new_zeros(())) * temperature ** 2


def dho_loss(ce_logits: torch.Tensor, kd_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
             temperature: float = 2.0, ce_weight: float = 0.5, kd_weight: float = 0.5) -> torch.Tensor:
    """DHO's loss: the sum of :func:`dho_terms`."""
    return sum(dho_terms(ce_logits, kd_logits, teacher_logits, target, temperature=temperature, ce_weight=ce_weight,
                         kd_weight=kd_weight).values())


def dho_terms(ce_logits: torch.Tensor, kd_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
              temperature: float = 2.0, ce_weight: float = 0.5, kd_weight: float = 0.5) -> dict[str, torch.Tensor]:
    """DHO's terms over a batch whose unlabelled images have target -1:

        ce    = ce_weight * CE(ce_logits[labelled], y)                       (batch mean over labelled rows)
        kd_l  = kd_weight * T^2 * KL(p_t^T || p_kd^T) over labelled rows     (batch mean over them)
        kd_u  = kd_weight * T^2 * KL(p_t^T || p_kd^T) over unlabelled rows   (batch mean over them; 0 with none)

    No host synchronisation: rows are selected by masks.
    """
    labelled = target != UNLABELLED
    ce_rows = F.cross_entropy(ce_logits, target.clamp(min=0), reduction="none")
    count = labelled.sum()
    ce = torch.where(count > 0, (ce_rows * labelled).sum() / count.clamp(min=1), ce_rows.new_zeros(()))
    kd_l = _batchmean_kl(kd_logits, teacher_logits, labelled, temperature)
    kd_u = _batchmean_kl(kd_logits, teacher_logits, ~labelled, temperature)
    return {"ce": ce_weight * ce, "kd_l": kd_weight * kd_l, "kd_u": kd_weight * kd_u}
