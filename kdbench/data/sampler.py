"""Which samples a rank sees, in which order, and with which augmentation seed: a pure function of
(run seed, epoch, sample index, rank, world size).

``EpochSampler`` shuffles the training set by a generator seeded from (seed, epoch) and hands each yielded
index its own augmentation seed, so an image's augmentation does not depend on the loading order, the number of
workers, the number of ranks, or where a resumed run starts. Under data parallelism the permutation is split
``perm[rank::world]``: at every step the ranks' local batches together are exactly the single-process global
batch. ``start`` skips the samples a run consumed before it was interrupted (exact mid-epoch resume).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler

_MIX_A, _MIX_B = 6364136223846793005, 1442695040888963407


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: shuffling and augmentation are a function of (seed, epoch) alone."""
    return (seed * 1_000_003 + epoch * 7919) % (2**63)


def sample_seed(seed_of_epoch: int, index: int) -> int:
    """Augmentation seed of one sample in one epoch (a fixed mixing of the two numbers)."""
    return (seed_of_epoch * _MIX_A + (index + 1) * _MIX_B) % (2**63)


class EpochSampler(Sampler):
    """Yields ``(index, augmentation seed)`` pairs for one rank; call ``set_epoch`` before each epoch."""

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world of size {world}")
        self.size, self.seed, self.shuffle, self.rank, self.world = size, seed, shuffle, rank, world
        self.epoch, self.start = 1, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; ``start`` = how many of this rank's samples of that epoch to skip."""
        self.epoch, self.start = int(epoch), int(start)

    @property
    def per_rank(self) -> int:
        return math.ceil(self.size / self.world)

    def order(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch (padded by wrapping so every rank has as many)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            perm = torch.randperm(self.size, generator=g)
        else:
            perm = torch.arange(self.size)
        padded = self.per_rank * self.world
        if padded > self.size:
            perm = torch.cat([perm, perm[: padded - self.size]])
        return perm[self.rank::self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = epoch_seed(self.seed, self.epoch)
        for index in self.order()[self.start:].tolist():
            yield index, sample_seed(base, index)

    def __len__(self) -> int:
        return max(self.per_rank - self.start, 0)


class ShardSampler(Sampler):
    """Evaluation: rank r takes indices r, r + world, ...; no padding, so metrics summed over ranks are exact."""

    def __init__(self, size: int, rank: int = 0, world: int = 1):
        self.indices = list(range(rank, size, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def aspect_groups(aspect_ratios) -> list[int]:
    """Aspect group of each image (width / height): 0 portrait (< 1), 1 landscape (>= 1), the two groups of
    torchvision's detection reference (``--aspect-ratio-group-factor 0``)."""
    return [int(float(r) >= 1.0) for r in aspect_ratios]


class GroupedEpochBatchSampler(Sampler):
    """Batches of ``(index, seed)`` pairs from an :class:`EpochSampler`, each batch drawn from one aspect group.

    For the current epoch it walks the sampler's order for this rank, puts each sample in its group's bucket and
    yields a bucket as soon as it holds ``batch_size`` samples; the samples left in the buckets then follow in
    the sampler's order, cut into batches. So every sample of the rank comes exactly once and there are exactly
    ``ceil(per_rank / batch_size)`` batches (the last two may mix groups). ``set_epoch(epoch, start)`` mirrors
    EpochSampler: ``start`` counts samples (a multiple of ``batch_size``) and skips ``start // batch_size`` batches
    of the epoch's fixed batch list (exact mid-epoch resume). Torchvision's ``GroupedBatchSampler`` groups the same
    way but pads the leftovers with repeated samples.
    """

    def __init__(self, sampler: EpochSampler, group_ids, batch_size: int):
        if len(group_ids) != sampler.size:
            raise ValueError(f"{len(group_ids)} group ids for a sampler over {sampler.size} samples")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler, self.group_ids, self.batch_size = sampler, [int(g) for g in group_ids], int(batch_size)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch; ``start`` = how many of this rank's samples of that epoch were already consumed."""
        if start % self.batch_size:
            raise ValueError(f"start {start} is not a multiple of the batch size {self.batch_size}")
        self.sampler.set_epoch(epoch, 0)
        self.start = int(start)

    @property
    def per_rank(self) -> int:
        return self.sampler.per_rank

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    @property
    def seed(self) -> int:
        return self.sampler.seed

    def batches(self) -> list[list[tuple[int, int]]]:
        """Every batch of the current epoch for this rank, in order (the whole epoch, ignoring ``start``)."""
        start, self.sampler.start = self.sampler.start, 0
        try:
            pairs = list(iter(self.sampler))
        finally:
            self.sampler.start = start
        buckets: dict[int, list[int]] = {}
        batches, used = [], [False] * len(pairs)
        for position, (index, _) in enumerate(pairs):
            bucket = buckets.setdefault(self.group_ids[index], [])
            bucket.append(position)
            if len(bucket) == self.batch_size:
                batches.append([pairs[p] for p in bucket])
                for p in bucket:
                    used[p] = True
                bucket.clear()
        rest = [pair for pair, done in zip(pairs, used) if not done]
        batches.extend(rest[i:i + self.batch_size] for i in range(0, len(rest), self.batch_size))
        return batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        yield from self.batches()[self.start // self.batch_size:]

    def __len__(self) -> int:
        return max(math.ceil(self.per_rank / self.batch_size) - self.start // self.batch_size, 0)
