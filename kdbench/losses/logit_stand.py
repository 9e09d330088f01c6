"""Logit standardisation: a per-sample Z-score of a logit vector, applied before the temperature softmax."""

from __future__ import annotations

import torch

__all__ = ["zscore_logits"]


def zscore_logits(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    r"""Z-score every logit vector over its last (class) dimension.

    .. math::

        \mathcal{Z}(z) = \frac{z - \bar z}{\epsilon + \sigma(z)}, \qquad
        \bar z = \frac{1}{C}\sum_c z_c, \quad
        \sigma(z) = \sqrt{\tfrac{1}{C-1}\textstyle\sum_c (z_c - \bar z)^2}

    The standard deviation is the unbiased one (``torch.std`` default) and ``eps`` is added to it, not under
    the square root, exactly as ``normalize`` in sunshangquan/logit-standardization-KD
    (``mdistiller/distillers/KD.py``, ``DKD.py``, ``MLKD.py``). Source: Sun et al., "Logit Standardization in
    Knowledge Distillation", CVPR 2024 (arXiv:2403.01427). The temperature is applied afterwards by the
    caller, as in the reference (``softmax(Z(z) / T)``).
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (eps + std)
