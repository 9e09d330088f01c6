"""Shared data pieces: the bundle a dataset builder returns, index-returning wrapper, transforms, loaders."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from .augment import PadCropFlip, SeededCompose, SeededSequence
from .randaugment import FixMatchRandAugment
from .sampler import sample_seed


log = logging.getLogger("kdbench")

AUGMENTATIONS = ("cifar", "pad_crop", "none", "randaugment", "randaugment_fixmatch", "imagenet", "detection")
# ImageNet testing resizes the shorter side to image_size / 0.875 (256 for 224), then centre-crops.
IMAGENET_CROP_FRACTION = 0.875


@dataclass
class DataBundle:
    name: str
    num_classes: int
    image_size: int
    train: Dataset  # yields (image uint8 tensor CHW, target int, index int) after wrapping
    test: Dataset
    validation: Dataset | None = None  # a split held out of the training set (kdbench/data/splits.py)
    unlabelled: Dataset | None = None  # the unlabelled pool, for methods that use one
    split: dict | None = None  # how the training set was split (result.json)


class IndexedDataset(Dataset):
    """Wraps a (image, target) dataset: applies ``transform`` and returns (image, target, index).

    The sample index is what memory-bank methods (CRD) and logit caches key on. With ``views`` (name ->
    transform) it returns (image, target, index, {name: view}), each view an independent draw of its transform
    on the same source image (as MLKD's weak/strong pair).
    """

    def __init__(self, base: Dataset, transform=None, views: dict | None = None):
        self.base = base
        self.transform = transform
        self.views = dict(views or {})

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        """``key`` is an index, or (index, seed) from EpochSampler: the augmentation is then a function of the
        seed (each extra view gets its own seed derived from it)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        source, target = self.base[index]
        image = _transform(self.transform, source, seed)
        if not self.views:
            return image, int(target), index
        views = {name: _transform(tf, source, None if seed is None else sample_seed(seed, k))
                 for k, (name, tf) in enumerate(self.views.items(), start=1)}
        return image, int(target), index, views


def _transform(transform, image, seed):
    if transform is None:
        return image
    return transform(image, seed) if getattr(transform, "seeded", False) else transform(image)


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


def train_targets(bundle: DataBundle) -> torch.Tensor:
    """The training labels in sample-index order, as an int64 CPU tensor (read without decoding images)."""
    targets = getattr(bundle.train, "targets", None)
    if targets is None:
        targets = [bundle.train[i][1] for i in range(len(bundle.train))]
    return torch.as_tensor(targets, dtype=torch.long).clone()


def build_transforms(augment: str, image_size: int, mean: Sequence[float], std: Sequence[float], train: bool):
    """Per-sample transforms for the DataLoader path.

    ``cifar``: zero-pad 4, random ``image_size`` crop, horizontal flip p=0.5, then normalise: the CRD /
    mdistiller CIFAR training augmentation. ``pad_crop``: zero-pad 1 and random crop, no flip. ``none``.
    ``randaugment``: ``cifar`` followed by torchvision's RandAugment (2 ops at magnitude 10).
    ``randaugment_fixmatch``: ``cifar`` followed by FixMatch's RandAugment variant with Cutout, the strong view of
    MLKD's official code (op list, ranges and draws: ``kdbench.data.randaugment``).
    ``imagenet``: RandomResizedCrop to ``image_size`` + horizontal flip p=0.5 on the decoded image; its test
    transform resizes the shorter side to ``image_size / 0.875`` (256 for 224) and centre-crops ``image_size``
    (torchvision's reference ImageNet recipe, as mdistiller's ImageNet loader).
    Other test transforms only convert and normalise.
    """
    if augment == "detection":
        from ..errors import ConfigError

        raise ConfigError("dataset.augment: 'detection' (flip with the boxes) is applied by the detection datasets "
                          "(kdbench.data.coco), not by a per-image transform")
    after = T.Compose([T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))])
    if augment == "imagenet":
        if not train:
            resize = int(round(image_size / IMAGENET_CROP_FRACTION))
            return T.Compose([T.Resize(resize, antialias=True), T.CenterCrop(image_size), T.ToImage(), after])
        crop_flip = T.Compose([T.RandomResizedCrop(image_size, antialias=True), T.RandomHorizontalFlip(0.5)])
        return SeededCompose(T.Identity(), crop_flip, T.Compose([T.ToImage(), after]))
    if not train or augment == "none":
        return T.Compose([T.ToImage(), after])
    if augment == "cifar":
        step = PadCropFlip()
    elif augment == "randaugment":
        step = T.Compose([PadCropFlip(), T.RandAugment(num_ops=2, magnitude=10)])
    elif augment == "randaugment_fixmatch":
        step = SeededSequence(PadCropFlip(), FixMatchRandAugment())
    elif augment == "pad_crop":
        step = PadCropFlip(pad=1, flip=False)
    else:
        from ..errors import ConfigError

        raise ConfigError(f"dataset.augment: unknown augmentation '{augment}'; valid: {', '.join(AUGMENTATIONS)}")
    return SeededCompose(T.ToImage(), step, after)


_capped_noted: set[tuple[int, int]] = set()


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def loader_workers(configured: int | None = None) -> int:
    """DataLoader workers for ``dataset.num_workers = configured`` (all CPUs when unset or negative), capped at
    :func:`available_cpus`; a cap is noted in the log once per process."""
    cpus = available_cpus()
    if configured is None or int(configured) < 0:
        return cpus
    if int(configured) > cpus and (int(configured), cpus) not in _capped_noted:
        _capped_noted.add((int(configured), cpus))
        log.info("dataset.num_workers=%d is more than the %d CPUs this process may use; using %d loader workers",
                 int(configured), cpus, cpus)
    return min(int(configured), cpus)


def build_loaders(bundle: DataBundle, cfg_data, batch_size: int, eval_batch_size: int, pin_memory: bool,
                  generator: torch.Generator, views: dict[str, str] | None = None, train_sampler=None,
                  test_sampler=None):
    """Train loader and test loader over ``bundle``.

    The training order comes from ``train_sampler`` when given (the trainer's seeded, rank-sharded
    EpochSampler), else from shuffling with ``generator``; ``generator`` also seeds the workers, so the loader
    never draws from the global RNG. ``test_sampler`` selects this rank's share of the test set (default: all,
    in order). ``views`` (name -> augmentation) adds extra independently augmented views of each training image.
    """
    train_tf = build_transforms(cfg_data.augment, bundle.image_size, cfg_data.mean, cfg_data.std, train=True)
    test_tf = build_transforms(cfg_data.augment, bundle.image_size, cfg_data.mean, cfg_data.std, train=False)
    view_tfs = {name: build_transforms(aug, bundle.image_size, cfg_data.mean, cfg_data.std, train=True)
                for name, aug in (views or {}).items()}
    workers = loader_workers(int(cfg_data.get("num_workers", 0) or 0))
    common = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0, generator=generator)
    train = DataLoader(IndexedDataset(bundle.train, train_tf, view_tfs), batch_size=batch_size,
                       shuffle=train_sampler is None, sampler=train_sampler, drop_last=False, **common)
    test = DataLoader(IndexedDataset(bundle.test, test_tf), batch_size=eval_batch_size, shuffle=False,
                      sampler=test_sampler, **common)
    return train, test
