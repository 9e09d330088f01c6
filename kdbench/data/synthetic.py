"""A generated, learnable classification set: smooth per-class prototypes plus pixel noise.

Deterministic (fixed generator seed), so speed tests and smoke runs see the same data everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import DataBundle, TensorImages


def _make(num: int, prototypes: torch.Tensor, noise: float, gen: torch.Generator):
    targets = torch.randint(0, prototypes.shape[0], (num,), generator=gen)
    images = prototypes[targets] + noise * torch.randn((num, *prototypes.shape[1:]), generator=gen)
    return TensorImages(images.clamp(0, 1).mul(255).round().to(torch.uint8), targets)


def build_synthetic(cfg) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    size, classes = int(cfg.image_size), int(cfg.num_classes)
    coarse = torch.rand((classes, 3, 4, 4), generator=gen)
    prototypes = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    train = _make(int(cfg.train_size), prototypes, float(cfg.noise), gen)
    test = _make(int(cfg.test_size), prototypes, float(cfg.noise), gen)
    return DataBundle(cfg.name, classes, size, train, test)
