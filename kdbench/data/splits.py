"""Splits of the training set: a validation split and a labelled / unlabelled partition, both class-balanced and
seeded by ``dataset.split_seed`` alone (so every method and every run seed sees the same split).

    dataset.validation_fraction   the share of every class held out as the validation split: ``auto`` = 0.1 for
                                  methods that declare ``needs_validation`` (DHO's (a, b) selection, TGeo-KD's outer
                                  step), else 0; never taken from the test set
    dataset.labelled_fraction     of the rest, the share of every class that keeps its labels (1.0: all); the others
                                  form the unlabelled pool, seen only by methods that declare ``uses_unlabelled``
                                  (every other method trains on the labelled part alone)

The validation split is carved first, from the whole training set; the labelled part is then drawn from what remains.
Each class contributes ``round(fraction * n_class)`` samples (at least one where the fraction is above 0).
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import torch
from torch.utils.data import Dataset, Subset

from ..errors import ConfigError
from .base import DataBundle, TensorImages, train_targets
from .device_loader import uint8_images

log = logging.getLogger("kdbench")
AUTO_VALIDATION_FRACTION = 0.1


def class_balanced_split(targets: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rest): sorted sample positions; ``chosen`` holds ``round(fraction * n_c)`` of each class c (at least
    one when ``fraction > 0``), drawn by a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    chosen, rest = [], []
    for label in torch.unique(targets).tolist():
        members = torch.nonzero(targets == label).flatten()
        members = members[torch.randperm(len(members), generator=g)]
        take = min(len(members), max(1, round(fraction * len(members)))) if fraction > 0 else 0
        chosen.append(members[:take])
        rest.append(members[take:])
    cat = lambda parts: torch.sort(torch.cat(parts)).values if parts else torch.zeros(0, dtype=torch.long)
    return cat(chosen), cat(rest)


def subsetter(dataset: Dataset, targets: torch.Tensor):
    """``take(positions)``: the samples of ``dataset`` at ``positions`` (``targets``: its labels in index order), in a
    form every loader of the original serves: uint8 images in memory stay a uint8 tensor (device loader), an
    ImageFolder tree keeps its ``samples`` list (JPEG loader). The in-memory images are read once for every part."""
    held = uint8_images(dataset)

    def take(positions: torch.Tensor) -> Dataset:
        if held is not None:
            return TensorImages(held[0][positions], targets[positions])
        index = positions.tolist()
        if hasattr(dataset, "samples"):
            part = copy.copy(dataset)
            part.samples = [dataset.samples[i] for i in index]
            part.targets = [t for _, t in part.samples]
            if hasattr(dataset, "imgs"):
                part.imgs = part.samples
            return part
        part = Subset(dataset, index)
        part.targets = targets[positions].tolist()
        return part

    return take


def validation_fraction(dcfg, method) -> float:
    value = dcfg.get("validation_fraction", "auto")
    if value is None or str(value) == "auto":
        return AUTO_VALIDATION_FRACTION if method.needs_validation else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) < 1:
        raise ConfigError(f"dataset.validation_fraction: expected auto or a number in [0, 1), got {value!r}")
    if float(value) == 0 and method.needs_validation:
        raise ConfigError("dataset.validation_fraction: the method selects on a validation split; use auto or a "
                          "number in (0, 1)")
    return float(value)


def labelled_fraction(dcfg) -> float:
    value = dcfg.get("labelled_fraction", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) <= 1:
        raise ConfigError(f"dataset.labelled_fraction: expected a number in (0, 1], got {value!r}")
    return float(value)


def split_training(data: DataBundle, dcfg, method) -> DataBundle:
    """``data`` with ``train`` = the labelled training part, and ``validation`` / ``unlabelled`` (datasets, or None)
    set as ``dcfg`` and the method ask. ``split`` records what was done (for result.json)."""
    val_fraction, lab_fraction = validation_fraction(dcfg, method), labelled_fraction(dcfg)
    seed = int(dcfg.get("split_seed", 0) or 0)
    if val_fraction == 0 and lab_fraction == 1:
        return data
    targets = train_targets(data)
    subset = subsetter(data.train, targets)
    positions = torch.arange(len(targets))
    validation = unlabelled = None
    if val_fraction > 0:
        held, kept = class_balanced_split(targets, val_fraction, seed)
        validation, positions = subset(held), kept
    if lab_fraction < 1:
        labelled, pool = class_balanced_split(targets[positions], lab_fraction, seed + 1)
        labelled, pool = positions[labelled], positions[pool]
        unlabelled = subset(pool) if method.uses_unlabelled else None
        positions = labelled
    split = {"seed": seed, "validation": 0 if validation is None else len(validation), "labelled": len(positions),
             "unlabelled": len(targets) - len(positions) - (0 if validation is None else len(validation)),
             "unlabelled_used": unlabelled is not None}
    log.info("training set split (seed %d): %d labelled, %d validation, %d unlabelled%s", seed, split["labelled"],
             split["validation"], split["unlabelled"], "" if unlabelled is not None or not split["unlabelled"]
             else " (not used: the method trains on labelled data)")
    return dataclasses.replace(data, train=subset(positions), validation=validation, unlabelled=unlabelled,
                               split=split)

