"""The classification batch every training and test loader yields, on the training device."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    images: torch.Tensor
    targets: torch.Tensor
    index: torch.Tensor  # sample indices into the dataset (memory banks and caches key on them)
    views: dict[str, torch.Tensor] = field(default_factory=dict)  # extra augmented views, by name
    view_ids: torch.Tensor | None = None  # which of the 162 reference views each image is (teacher-logit cache)

    def __len__(self) -> int:
        return int(self.images.shape[0])


class DeviceBatches:
    """A torch DataLoader's tuples ``(images, targets, index[, views])`` as :class:`Batch` on ``device``.

    ``view_ids_of(index) -> tensor`` (optional) names each image's reference view, computed from the sampler's
    seeds exactly as the device loader draws them."""

    def __init__(self, loader, device: torch.device, channels_last: bool = False, view_ids_of=None):
        self.loader, self.device, self.view_ids_of = loader, device, view_ids_of
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return len(self.loader)

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def __iter__(self):
        for images, targets, index, *extra in self.loader:
            views = {k: self._images(v) for k, v in extra[0].items()} if extra else {}
            view_ids = self.view_ids_of(index).to(self.device) if self.view_ids_of is not None else None
            yield Batch(self._images(images), targets.to(self.device, non_blocking=True),
                        index.to(self.device, non_blocking=True), views, view_ids)
