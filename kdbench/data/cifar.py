"""CIFAR-10 / CIFAR-100 from torchvision's on-disk format (the python pickles), downloaded only on request."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from torchvision import datasets

from ..errors import ConfigError
from .base import DataBundle


def _layout_checked(cls):
    """torchvision's CIFAR class, with its integrity check reduced to "every file of the layout exists".

    torchvision checks the md5 of the full-size files; any file set in the same format (a subset, or the
    small files the tests write) should load too. A download still verifies the archive's checksum.
    """

    class LayoutChecked(cls):
        def _check_integrity(self) -> bool:
            folder = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(folder, name)) for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                data = pickle.load(f, encoding="latin1")
            self.classes = data[self.meta["key"]]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    LayoutChecked.__name__ = cls.__name__
    return LayoutChecked


_FORMATS = {
    "cifar100": ("cifar-100-python", _layout_checked(datasets.CIFAR100)),
    "cifar10": ("cifar-10-batches-py", _layout_checked(datasets.CIFAR10)),
}


def check_cifar_root(cfg) -> Path:
    folder, cls = _FORMATS[cfg.name]
    root = Path(str(cfg.root)).expanduser()
    if not cfg.download and not (root / folder).is_dir():
        raise ConfigError(
            f"dataset.root: no {cfg.name} data at {(root / folder).absolute()} (torchvision's CIFAR format); "
            f"set dataset.root=<folder that contains {folder}/> or dataset.download=true to fetch it"
        )
    return root


def build_cifar(cfg) -> DataBundle:
    folder, cls = _FORMATS[cfg.name]
    root = check_cifar_root(cfg)
    try:
        train = cls(str(root), train=True, download=bool(cfg.download))
        test = cls(str(root), train=False, download=False)
    except (RuntimeError, OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
        raise ConfigError(f"dataset.root: cannot read {cfg.name} from {root / folder}: {e}") from None
    if len(set(train.targets)) > cfg.num_classes or max(train.targets) >= cfg.num_classes:
        raise ConfigError(f"dataset.num_classes: {cfg.num_classes} is smaller than the labels found in {root / folder}")
    return DataBundle(cfg.name, int(cfg.num_classes), int(cfg.image_size), train, test)
