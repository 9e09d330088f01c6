"""Training-set splits (kdbench/data/splits.py) and labelled+unlabelled batches (kdbench/data/semi.py)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from kdbench.data.base import DataBundle, TensorImages
from kdbench.data.device_loader import DeviceTrainLoader
from kdbench.data.sampler import EpochSampler
from kdbench.data.semi import UNLABELLED, LabelledAndUnlabelled
from kdbench.data.splits import class_balanced_split, split_training
from kdbench.errors import ConfigError
from kdbench.methods import METHODS


def _bundle(per_class=(40, 20, 30), seed=0):
    g = torch.Generator().manual_seed(seed)
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    targets = targets[torch.randperm(len(targets), generator=g)]
    images = torch.randint(0, 256, (len(targets), 3, 8, 8), dtype=torch.uint8, generator=g)
    # each image's first pixel encodes its position, so a subset's samples can be traced back
    images[:, 0, 0, 0] = torch.arange(len(targets)) % 256
    images[:, 0, 0, 1] = torch.arange(len(targets)) // 256
    return DataBundle("toy", len(per_class), 8, TensorImages(images, targets), TensorImages(images[:10], targets[:10]))


def _origin(dataset) -> torch.Tensor:
    return dataset.images[:, 0, 0, 0].long() + 256 * dataset.images[:, 0, 0, 1].long()


def test_class_balanced_split_is_seeded_disjoint_and_balanced():
    targets = torch.tensor([0] * 40 + [1] * 20 + [2] * 30)
    chosen, rest = class_balanced_split(targets, 0.1, seed=3)
    assert sorted(torch.cat([chosen, rest]).tolist()) == list(range(90))  # a partition
    assert [int((targets[chosen] == c).sum()) for c in range(3)] == [4, 2, 3]  # round(0.1 * n_c) of every class
    again, _ = class_balanced_split(targets, 0.1, seed=3)
    other, _ = class_balanced_split(targets, 0.1, seed=4)
    assert torch.equal(chosen, again) and not torch.equal(chosen, other)
    few, _ = class_balanced_split(targets, 0.01, seed=0)
    assert [int((targets[few] == c).sum()) for c in range(3)] == [1, 1, 1]  # at least one per class


def _cfg(**keys):
    return OmegaConf.create({"validation_fraction": "auto", "labelled_fraction": 1.0, "split_seed": 0, **keys})


def test_split_training_validation_then_labelled_part():
    data = _bundle()
    dho, kd = METHODS["dho"](), METHODS["kd"]()
    split = split_training(data, _cfg(labelled_fraction=0.1), dho)
    assert split.split == {"seed": 0, "validation": 9, "labelled": 9, "unlabelled": 72, "unlabelled_used": True}
    parts = [_origin(split.validation), _origin(split.train), _origin(split.unlabelled)]
    assert sorted(torch.cat(parts).tolist()) == list(range(90))  # disjoint, and together the training set
    for part, dataset in zip(parts, (split.validation, split.train, split.unlabelled)):
        assert torch.equal(data.train.targets[part], dataset.targets)  # labels travel with their images
    assert [int((split.train.targets == c).sum()) for c in range(3)] == [4, 2, 3]  # class-balanced labelled part
    # a method without an unlabelled pool trains on the same labelled part; it needs no validation split (auto: 0)
    plain = split_training(data, _cfg(labelled_fraction=0.1), kd)
    assert plain.unlabelled is None and plain.validation is None and plain.split["unlabelled_used"] is False
    assert split_training(data, _cfg(), kd) is data  # nothing asked: nothing split
    with pytest.raises(ConfigError, match="dataset.labelled_fraction: expected a number in"):
        split_training(data, _cfg(labelled_fraction=0.0), kd)
    with pytest.raises(ConfigError, match="dataset.validation_fraction: the method selects on a validation split"):
        split_training(data, _cfg(validation_fraction=0.0), dho)


def test_labelled_and_unlabelled_batches_resume_exactly():
    data = split_training(_bundle(), _cfg(labelled_fraction=0.2), METHODS["dho"]())
    device = torch.device("cpu")

    def loader():
        lab_sampler, pool_sampler = EpochSampler(len(data.train), 5), EpochSampler(len(data.unlabelled), 5)
        lab = DeviceTrainLoader(data.train, lab_sampler, 4, "cifar", (0.5,) * 3, (0.25,) * 3, device)
        pool = DeviceTrainLoader(data.unlabelled, pool_sampler, 4, "cifar", (0.5,) * 3, (0.25,) * 3, device)
        return LabelledAndUnlabelled(lab, lab_sampler, pool, pool_sampler, 4, labelled_size=len(data.train))

    whole = loader()
    whole.set_epoch(2)
    batches = list(whole)
    assert len(batches) == -(-len(data.unlabelled) // 4)  # the pool defines the epoch
    first = batches[0]
    assert first.images.shape[0] == 8 and (first.targets[:4] >= 0).all() and (first.targets[4:] == UNLABELLED).all()
    assert (first.index[4:] >= len(data.train)).all()
    per_pass = -(-len(data.train) // 4)  # a labelled pass: every labelled sample once, then the next pass begins
    first_pass = torch.cat([b.index[(b.targets != UNLABELLED)] for b in batches[:per_pass]])
    assert sorted(first_pass.tolist()) == list(range(len(data.train)))
    second_pass = torch.cat([b.index[(b.targets != UNLABELLED)] for b in batches[per_pass:2 * per_pass]])
    assert not torch.equal(first_pass, second_pass)  # reshuffled (and re-augmented) for the next pass
    resumed = loader()
    resumed.set_epoch(2, start=3 * 4)
    for a, b in zip(batches[3:], resumed):
        assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets) and torch.equal(a.index, b.index)
