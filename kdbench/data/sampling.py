"""Negative sampling for contrastive distillation: training-set indices drawn from classes other than the anchor's.

CRD (Tian et al. ICLR 2020) contrasts each sample with ``k`` negatives taken uniformly from the training samples
of every *other* class. The references draw them per sample in the data loader with
``np.random.choice(cls_negative[target], k, replace=k > len(cls_negative[target]))`` (RepDistiller and
mdistiller ``CIFAR100InstanceSample``, so on CIFAR-100, with k = 16384 of 49500 candidates, without
replacement), while mdistiller's ImageNet sampler always draws with replacement. :class:`OtherClassSampler`
does the same on the device, for a whole batch at once, with the global torch RNG:

- with replacement: sample indices are kept sorted by class; ``r`` uniform in ``[0, N - n_c)`` is mapped to a
  position in that order that skips the block of class ``c`` (a bijection onto the other classes' samples);
- without replacement: every training sample gets an independent uniform key, the anchor's class gets keys
  above 1, and the ``k`` smallest keys name a uniformly random ``k``-subset of the other classes' samples
  (costs a ``(B, N)`` key matrix per call: fine for CIFAR, use replacement for ImageNet-sized sets).

A row whose candidate pool is smaller than ``k`` is drawn with replacement, as the references do.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class OtherClassSampler(nn.Module):
    """Draws ``(B, k)`` training-set indices whose labels differ from each anchor's class.

    ``targets`` are the training labels in sample-index order. The lookup tables are non-persistent buffers:
    they follow the module across devices but are rebuilt from the data, not stored in checkpoints.
    """

    def __init__(self, targets: torch.Tensor, replacement: bool = False):
        super().__init__()
        targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1).cpu()
        counts = torch.bincount(targets)
        pool = targets.numel() - counts
        present = pool[counts > 0]
        if present.numel() == 0 or int(present.min()) < 1:
            raise ValueError("negative sampling needs training samples of at least two classes")
        self.replacement = replacement
        self.min_pool, self.max_pool = int(present.min()), int(present.max())
        self.register_buffer("targets", targets, persistent=False)
        self.register_buffer("order", torch.argsort(targets, stable=True), persistent=False)
        self.register_buffer("starts", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("counts", counts, persistent=False)

    def forward(self, classes: torch.Tensor, k: int) -> torch.Tensor:
        """``(B, k)`` indices; row ``b`` holds samples of classes other than ``classes[b]``."""
        classes = classes.reshape(-1).to(self.targets.device)
        if self.replacement or k > self.max_pool:
            return self.with_replacement(classes, k)
        if k <= self.min_pool:
            return self.without_replacement(classes, k)
        short = (self.targets.numel() - self.counts[classes] < k).unsqueeze(1)
        return torch.where(short, self.with_replacement(classes, k), self.without_replacement(classes, k))

    def with_replacement(self, classes: torch.Tensor, k: int) -> torch.Tensor:
        n_c, start = self.counts[classes].unsqueeze(1), self.starts[classes].unsqueeze(1)
        pool = (self.targets.numel() - n_c).double()
        u = torch.rand(classes.numel(), k, dtype=torch.float64, device=classes.device)
        r = (u * pool).long()
        return self.order[r + (r >= start) * n_c]

    def without_replacement(self, classes: torch.Tensor, k: int) -> torch.Tensor:
        keys = torch.rand(classes.numel(), self.targets.numel(), dtype=torch.float64, device=classes.device)
        keys.masked_fill_(self.targets.unsqueeze(0) == classes.unsqueeze(1), 2.0)
        return keys.topk(k, dim=1, largest=False, sorted=False).indices


__all__ = ["OtherClassSampler"]
