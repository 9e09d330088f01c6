"""DINO's cross-entropy between a teacher's and a student's head outputs, as the random-teacher experiments use it.

    L = mean over pairs and samples of  - sum_k softmax(t / tau_t)_k * log softmax(s / tau_s)_k

Sarnthein et al., "Random Teachers are Good Teachers", ICML 2023 (safelix/dinopl ``dinopl/core.py``:
``DINOHead.forward`` divides the head's projections by its temperature, ``DINO.multicrop_loss_clf`` takes the
cross-entropy of each (teacher view, student view) pair as a batch mean and then the mean over pairs). With the
``same`` pairing of ``configs/cifar10_distillation_v2.json`` each view is paired with itself only, so the loss is
the mean over every leading dimension of ``(..., K)`` inputs. Computed in float32 (softmax over 65536 outputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dino_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, student_temp: float = 1.0,
              teacher_temp: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy ``H(softmax(teacher_out / teacher_temp), softmax(student_out / student_temp))`` over all
    leading dimensions (samples, or views x samples); the teacher side carries no gradient."""
    log_p_s = F.log_softmax(student_out.float() / student_temp, dim=-1)
    p_t = F.softmax(teacher_out.detach().float() / teacher_temp, dim=-1)
    return -(p_t * log_p_s).sum(dim=-1).mean()
