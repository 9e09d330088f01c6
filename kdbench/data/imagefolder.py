"""ImageNet-1K (or any ImageFolder tree): ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*.JPEG``.

Read with torchvision's ``ImageFolder`` (class index = position of the class folder in sorted order, the same in
both splits). With ``trainer.loader=auto`` (or ``jpeg``) the files are decoded and augmented as tensors by
:mod:`kdbench.data.jpeg` (``decode_jpeg``; nvJPEG on CUDA), with the crop boxes and flips of the PIL path; with
``trainer.loader=torch`` the loader workers decode them with PIL and apply the ``imagenet`` augmentation of
:func:`kdbench.data.base.build_transforms`. ImageNet cannot be downloaded: ``dataset.download=true`` is an error.
"""

from __future__ import annotations

from pathlib import Path

from torchvision import datasets

from ..errors import ConfigError
from .base import DataBundle

SPLITS = ("train", "val")
LAYOUT = "<root>/train/<class>/*.JPEG and <root>/val/<class>/*.JPEG"


def check_imagefolder_root(cfg) -> Path:
    """The dataset root, after a cheap check that both split folders exist (no image is opened)."""
    root = Path(str(cfg.root)).expanduser()
    if cfg.download:
        raise ConfigError(f"dataset.download: {cfg.name} cannot be downloaded; put it at {root} ({LAYOUT}) "
                          f"and set dataset.download=false")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise ConfigError(f"dataset.root: no {split}/ folder at {(root / split).absolute()} (ImageFolder layout "
                              f"{LAYOUT}); set dataset.root=<folder that contains train/ and val/>")
    return root


def build_imagefolder(cfg) -> DataBundle:
    root = check_imagefolder_root(cfg)
    try:
        train, test = (datasets.ImageFolder(str(root / split)) for split in SPLITS)
    except (FileNotFoundError, OSError) as e:
        raise ConfigError(f"dataset.root: cannot read {cfg.name} from {root}: {e}") from None
    if train.classes != test.classes:
        only = sorted(set(train.classes) ^ set(test.classes))
        raise ConfigError(f"dataset.root: train/ and val/ of {root} have different class folders "
                          f"({len(train.classes)} vs {len(test.classes)}; e.g. {', '.join(only[:3])})")
    if len(train.classes) > int(cfg.num_classes):
        raise ConfigError(f"dataset.num_classes: {cfg.num_classes} is smaller than the {len(train.classes)} class "
                          f"folders in {root / 'train'}")
    return DataBundle(cfg.name, int(cfg.num_classes), int(cfg.image_size), train, test)
