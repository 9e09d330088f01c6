"""Semi-supervised batches: a labelled batch followed by an unlabelled one, every step.

As DHO's reference loop (erjui/DHO ``train_imgnet_semi.py``): the unlabelled pool defines the epoch; the labelled set
is drawn alongside, batch for batch, and starts a new pass whenever it runs out. Each batch is the labelled images
followed by the unlabelled ones (one forward over both, as the reference concatenates them); the unlabelled images'
targets are ``UNLABELLED`` (-1) and their indices are offset by the labelled set's size (index space: labelled
samples, then the pool).

Exact resume: pass ``p`` of the labelled set within epoch ``e`` is ordered and augmented as sampler epoch
``e * PASSES + p``, so every batch is a function of (seed, epoch, step) and a run stopped mid-epoch continues with the
same batches.
"""

from __future__ import annotations

import torch

from .batch import Batch

UNLABELLED = -1
PASSES = 1_000_003  # labelled passes per epoch never reach this


class LabelledAndUnlabelled:
    """Loader and sampler at once: ``set_epoch(epoch, start)`` and ``per_rank`` are the pool's (the epoch's length);
    iterating yields the concatenated :class:`Batch` of each step."""

    def __init__(self, labelled, labelled_sampler, pool, pool_sampler, batch_size: int, labelled_size: int):
        self.labelled, self.labelled_sampler = labelled, labelled_sampler
        self.pool, self.pool_sampler = pool, pool_sampler
        self.batch_size, self.labelled_size = batch_size, labelled_size
        self.epoch, self.start = 1, 0

    @property
    def per_rank(self) -> int:
        return self.pool_sampler.per_rank

    @property
    def seed(self) -> int:
        return self.pool_sampler.seed

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)
        self.pool_sampler.set_epoch(epoch, start)

    def __len__(self) -> int:
        return len(self.pool)

    def _labelled_passes(self, first_step: int):
        """Labelled batches from step ``first_step`` of the epoch on, pass after pass."""
        per_pass = -(-self.labelled_sampler.per_rank // self.batch_size)
        passes, offset = divmod(first_step, per_pass)
        while True:
            self.labelled_sampler.set_epoch(self.epoch * PASSES + passes, offset * self.batch_size)
            yield from self.labelled
            passes, offset = passes + 1, 0

    def __iter__(self):
        labelled = self._labelled_passes(self.start // self.batch_size)
        for unlabelled in self.pool:
            batch = next(labelled)
            views = {name: torch.cat([view, unlabelled.views[name]]) for name, view in batch.views.items()}
            yield Batch(torch.cat([batch.images, unlabelled.images]),
                        torch.cat([batch.targets, torch.full_like(unlabelled.targets, UNLABELLED)]),
                        torch.cat([batch.index, unlabelled.index + self.labelled_size]), views)
