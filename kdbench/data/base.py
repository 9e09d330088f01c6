"""Shared data pieces: the bundle a dataset builder returns, index-returning wrapper, transforms, loaders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T


AUGMENTATIONS = ("cifar", "pad_crop", "none")


@dataclass
class DataBundle:
    name: str
    num_classes: int
    image_size: int
    train: Dataset  # yields (image uint8 tensor CHW, target int, index int) after wrapping
    test: Dataset


class IndexedDataset(Dataset):
    """Wraps a (image, target) dataset: applies ``transform`` and returns (image, target, index).

    The sample index is what memory-bank methods (CRD) and logit caches key on.
    """

    def __init__(self, base: Dataset, transform=None):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, target = self.base[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(target), index


class TensorImages(Dataset):
    """Images held as one uint8 tensor (N, C, H, W) with integer targets."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor):
        assert images.dtype == torch.uint8 and images.ndim == 4
        self.images = images
        self.targets = targets.long()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.images[index], int(self.targets[index])


def build_transforms(augment: str, image_size: int, mean: Sequence[float], std: Sequence[float], train: bool):
    """Per-sample transforms for the DataLoader path.

    ``cifar``: zero-pad 4, random ``image_size`` crop, horizontal flip p=0.5, then normalise: the CRD /
    mdistiller CIFAR training augmentation. ``pad_crop``: zero-pad 1 and random crop, no flip. ``none``.
    Test transforms only convert and normalise.
    """
    steps = [T.ToImage()]
    if train:
        if augment == "cifar":
            steps += [T.RandomCrop(image_size, padding=4), T.RandomHorizontalFlip(0.5)]
        elif augment == "pad_crop":
            steps += [T.RandomCrop(image_size, padding=1)]
        elif augment != "none":
            from ..errors import ConfigError

            raise ConfigError(f"dataset.augment: unknown augmentation '{augment}'; valid: {', '.join(AUGMENTATIONS)}")
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))]
    return T.Compose(steps)


def build_loaders(bundle: DataBundle, cfg_data, batch_size: int, eval_batch_size: int, pin_memory: bool,
                  generator: torch.Generator):
    """Train loader (shuffled by ``generator``, which the trainer reseeds every epoch) and test loader."""
    train_tf = build_transforms(cfg_data.augment, bundle.image_size, cfg_data.mean, cfg_data.std, train=True)
    test_tf = build_transforms(cfg_data.augment, bundle.image_size, cfg_data.mean, cfg_data.std, train=False)
    workers = int(cfg_data.get("num_workers", 0) or 0)
    common = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0)
    train = DataLoader(IndexedDataset(bundle.train, train_tf), batch_size=batch_size, shuffle=True,
                       generator=generator, drop_last=False, **common)
    test = DataLoader(IndexedDataset(bundle.test, test_tf), batch_size=eval_batch_size, shuffle=False, **common)
    return train, test
