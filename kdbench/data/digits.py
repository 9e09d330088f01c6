"""scikit-learn's bundled handwritten digits: the offline quickstart dataset (no download, ships with sklearn)."""

from __future__ import annotations

import torch

from .base import DataBundle, TensorImages


def build_digits(cfg) -> DataBundle:
    """1,797 8x8 grey images (levels 0..16 scaled to 0..255), replicated to 3 channels; fixed stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images).mul(255.0 / 16.0).round().to(torch.uint8)
    images = images.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    targets = torch.from_numpy(digits.target)
    train_idx, test_idx = train_test_split(
        torch.arange(len(targets)).numpy(), test_size=float(cfg.test_fraction), stratify=digits.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return DataBundle(
        cfg.name, int(cfg.num_classes), int(cfg.image_size),
        TensorImages(images[train_idx], targets[train_idx]), TensorImages(images[test_idx], targets[test_idx]),
    )
