"""Datasets and loaders. One file per dataset family; every dataset yields (image, target, index)."""

from __future__ import annotations

from .base import DataBundle, IndexedDataset, build_loaders, build_transforms, train_targets
from .cifar import build_cifar, check_cifar_root
from .coco import build_coco, check_coco_root
from .digits import build_digits
from .imagefolder import build_imagefolder, check_imagefolder_root
from .synthetic import build_synthetic

from ..errors import ConfigError

DATASETS = {
    "cifar100": build_cifar,
    "cifar10": build_cifar,
    "digits": build_digits,
    "synthetic": build_synthetic,
    "imagenet": build_imagefolder,
    "coco": build_coco,
}


def check_data(cfg) -> None:
    """Cheap check that the dataset a config names exists (before any run directory is made)."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"dataset.name: unknown dataset '{cfg.name}'; valid: {', '.join(sorted(DATASETS))}")
    if cfg.name in ("cifar10", "cifar100"):
        check_cifar_root(cfg)
    elif cfg.name == "imagenet":
        check_imagefolder_root(cfg)
    elif cfg.name == "coco":
        check_coco_root(cfg)


def build_data(cfg) -> DataBundle:
    """Build the train and test sets named by ``cfg.name`` (a ``dataset`` config group entry)."""
    try:
        builder = DATASETS[cfg.name]
    except KeyError:
        raise ConfigError(f"dataset.name: unknown dataset '{cfg.name}'; valid: {', '.join(sorted(DATASETS))}") from None
    return builder(cfg)


__all__ = ["check_data", "DataBundle", "IndexedDataset", "build_data", "build_loaders", "build_transforms", "train_targets", "DATASETS"]
