"""Device-resident data: the whole dataset as uint8 on the training device, batches cut, augmented and
normalised there, with no worker processes and no per-sample Python.

Same samples, same order, same views as the DataLoader path: the order and each sample's view come from the
same ``EpochSampler`` (seeded by run seed, epoch and sample index), and ``crop_flip_batch`` is the batched form
of the reference pad-4 / random-crop / flip augmentation, so both paths give identical batches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .augment import PAD, crop_flip_batch, view_ids
from .base import DataBundle
from .batch import Batch
from .sampler import EpochSampler, ShardSampler, epoch_seed

DEVICE_AUGMENTATIONS = ("cifar", "none")


def uint8_images(dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(N, C, H, W) uint8 images and (N,) int64 targets of an in-memory dataset, or None if it has no such form
    (CIFAR's ``data`` array, ``TensorImages``)."""
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4:
        return images, torch.as_tensor(dataset.targets, dtype=torch.long)
    data = getattr(dataset, "data", None)
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4 and data.shape[-1] in (1, 3):
        return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(dataset.targets, dtype=torch.long)
    return None


def device_loadable(bundle: DataBundle, augment: str) -> str | None:
    """None if the device loader can serve this data, else why not."""
    if augment not in DEVICE_AUGMENTATIONS:
        return f"augmentation '{augment}' has no device form (device loader: {', '.join(DEVICE_AUGMENTATIONS)})"
    if uint8_images(bundle.train) is None or uint8_images(bundle.test) is None:
        return f"dataset {bundle.name} is not held in memory as uint8 images"
    return None


class _DeviceImages:
    def __init__(self, dataset, device, mean, std, channels_last: bool, pad: int):
        images, targets = uint8_images(dataset)
        self.pad = pad
        self.images = (F.pad(images, (pad,) * 4) if pad else images).to(device)
        self.targets = targets.to(device)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0
        self.channels_last = channels_last

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        out = (batch.float() - self.mean) / self.std
        return out.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)


class DeviceTrainLoader:
    """Yields :class:`Batch` on the device, with each image's reference view id (0..161) in ``view_ids``.

    Iteration follows ``sampler`` (call ``sampler.set_epoch`` before each epoch, as with a DataLoader).
    """

    def __init__(self, dataset, sampler: EpochSampler, batch_size: int, augment: str, mean, std, device,
                 channels_last: bool = False):
        self.sampler, self.batch_size, self.augment = sampler, batch_size, augment
        self.data = _DeviceImages(dataset, device, mean, std, channels_last, PAD if augment == "cifar" else 0)
        self.device = device

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        s = self.sampler
        order = s.order()[s.start:]
        views = torch.from_numpy(view_ids(epoch_seed(s.seed, s.epoch), order.numpy())).to(self.device)
        order = order.to(self.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            view = views[start:start + self.batch_size]
            raw = self.data.images[index]
            if self.augment == "cifar":
                raw = crop_flip_batch(raw, view)
            yield Batch(self.data.normalise(raw), self.data.targets[index], index, view_ids=view)


class DeviceTestLoader:
    """Evaluation batches (this rank's shard, no augmentation) as :class:`Batch`."""

    def __init__(self, dataset, batch_size: int, mean, std, device, rank: int = 0, world: int = 1,
                 channels_last: bool = False):
        self.data = _DeviceImages(dataset, device, mean, std, channels_last, 0)
        self.index = torch.tensor(list(ShardSampler(len(self.data.targets), rank, world)), device=device)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.index), self.batch_size):
            index = self.index[start:start + self.batch_size]
            yield Batch(self.data.normalise(self.data.images[index]), self.data.targets[index], index)
