"""Per-class means of a teacher statistic over the un-augmented training set, cached per teacher and labels: the
shared pre-pass of methods that need teacher statistics per class (ND's class-mean embeddings, TGeo-KD's class-mean
probabilities)."""

from __future__ import annotations

import hashlib
from typing import Callable

import torch

from ..errors import ConfigError
from ..io import save_torch
from .base import BuildContext


def teacher_class_average(context: BuildContext, statistic: Callable[[torch.Tensor], torch.Tensor],
                          folder: str) -> torch.Tensor:
    """(num_classes, D) mean of ``statistic(images)`` ((B, D) from the frozen teacher) per class, over the
    un-augmented training set (CPU, float32; summed in float64). Cached as ``<cache_dir>/<folder>/...`` keyed by the
    teacher fingerprint, class count, training-set size and a hash of its labels. A class without a training sample
    gets a zero row (no training batch can ask for it)."""
    labels = hashlib.sha256(context.train_targets.cpu().to(torch.int64).numpy().tobytes()).hexdigest()[:16]
    path = None
    if context.teacher_fingerprint:
        name = f"{context.teacher_fingerprint}_c{context.num_classes}_n{context.train_size}_{labels}.pt"
        path = context.cache_dir / folder / name
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
    sums = counts = None
    with torch.no_grad():
        for images, targets, _ in context.plain_train_batches():
            values = statistic(images).double()
            if sums is None:
                sums = values.new_zeros(context.num_classes, values.shape[1])
                counts = values.new_zeros(context.num_classes)
            targets = targets.to(values.device)
            sums.index_add_(0, targets, values)
            counts.index_add_(0, targets, torch.ones_like(targets, dtype=values.dtype))
    if sums is None:
        raise ConfigError("dataset: the training set is empty, so the teacher's class means are undefined")
    means = (sums / counts.clamp(min=1).unsqueeze(1)).float().cpu()
    if path is not None:
        save_torch(path, means)
    return means
