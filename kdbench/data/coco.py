"""COCO detection (2017 layout): ``<root>/{train2017,val2017}/*.jpg`` and
``<root>/annotations/instances_{train,val}2017.json``.

Read from the json with the standard library (no pycocotools needed to train). Images are ordered by image id and
COCO's non-contiguous category ids map to contiguous labels 1..K in sorted-id order (0 is background, torchvision's
convention). The splits follow Detectron2's COCO loading (``data/datasets/coco.py``, ``DatasetMapper``):

- training: crowd annotations are dropped, boxes are clipped to the image and those of zero width or height removed
  (``filter_empty_instances``), images left with no box are dropped (``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` drops
  those without a non-crowd annotation; the rare image whose only boxes have zero size, which Detectron2 keeps
  empty, is dropped too, as torchvision's reference does); augmentation = horizontal flip p=0.5 from the sample seed.
- evaluation: every image and every annotation as in the json (crowd flagged), boxes unclipped, no augmentation, so
  the targets score exactly as pycocotools ``COCOeval`` scores the json.

Images are not resized here: the detector's own transform does it. COCO cannot be downloaded by kdbench.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from .augment import _splitmix64
from .base import DataBundle

SPLITS = {"train": "train2017", "val": "val2017"}
LAYOUT = "<root>/train2017/, <root>/val2017/, <root>/annotations/instances_{train,val}2017.json"
AUGMENTS = ("detection", "none")
# Detectron2 drops boxes whose (clipped) width or height is not above this (Boxes.nonempty's threshold).
MIN_BOX_SIDE = 1e-5


def _paths(root: Path, split: str) -> tuple[Path, Path]:
    return root / SPLITS[split], root / "annotations" / f"instances_{SPLITS[split]}.json"


def check_coco_root(cfg) -> Path:
    """The dataset root, after a cheap check that the standard layout exists (nothing is opened)."""
    root = Path(str(cfg.root)).expanduser()
    if cfg.get("download", False):
        raise ConfigError(f"dataset.download: {cfg.name} cannot be downloaded by kdbench; put it at {root} ({LAYOUT}) "
                          f"and set dataset.download=false")
    for split in SPLITS:
        images, annotations = _paths(root, split)
        for path, kind in ((images, "folder"), (annotations, "file")):
            if not (path.is_dir() if kind == "folder" else path.is_file()):
                raise ConfigError(f"dataset.root: no {path.relative_to(root)} {kind} at {path.absolute()} (COCO layout "
                                  f"{LAYOUT}); set dataset.root=<folder that contains train2017/ and annotations/>")
    return root


def decode(path: str) -> torch.Tensor:
    """A uint8 RGB (3, H, W) tensor: torchvision's decoder, PIL for what it refuses (EXIF orientation not applied,
    as the json's sizes are those of the stored pixels)."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(path, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        from PIL import Image

        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"))
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def flip_of(seed: int) -> bool:
    """Whether a sample seed flips its image (a fixed mixing of the seed, fair)."""
    return bool(_splitmix64(int(seed)) & 1)


class CocoSplit(Dataset):
    """One COCO split: ``dataset[index]`` or ``dataset[(index, seed)]`` -> ``(image, target, index)``.

    ``image``: uint8 (3, H, W) RGB. ``target``: ``boxes`` (N, 4) float32 xyxy pixels, ``labels`` (N,) int64 in
    1..K, ``iscrowd`` (N,) int64, ``area`` (N,) float32 (the annotation's ``area``, a mask area), ``image_id`` int.
    ``train=True`` filters and flips as the module docstring says; a flip is drawn from the sample seed, or from
    torch's global RNG when no seed is given. Annotations are held in flat numpy arrays (cheap to share with
    loader workers).
    """

    def __init__(self, images: str | Path, annotations: str | Path, train: bool, flip: bool | None = None):
        self.images, self.train = Path(images), bool(train)
        self.flip = self.train if flip is None else bool(flip)
        with open(annotations, encoding="utf-8") as f:
            data = json.load(f)
        category_ids = sorted(int(c["id"]) for c in data.get("categories", []))
        self.label_to_category_id: list[int] = [0] + category_ids  # index = contiguous label; 0 = background
        self.category_id_to_label = {c: k for k, c in enumerate(category_ids, start=1)}
        self.category_names = {int(c["id"]): c.get("name", str(c["id"])) for c in data.get("categories", [])}

        per_image: dict[int, list] = {}
        for ann in data.get("annotations", []):
            per_image.setdefault(int(ann["image_id"]), []).append(ann)
        images_sorted = sorted(data.get("images", []), key=lambda im: int(im["id"]))
        ids, files, sizes, offsets = [], [], [], [0]
        boxes, labels, crowd, area = [], [], [], []
        for im in images_sorted:
            image_id, width, height = int(im["id"]), float(im["width"]), float(im["height"])
            kept = 0
            for ann in per_image.get(image_id, []):
                x, y, w, h = (float(v) for v in ann["bbox"])
                box = [x, y, x + w, y + h]
                is_crowd = int(ann.get("iscrowd", 0))
                if self.train:
                    if is_crowd:
                        continue
                    box = [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
                           min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]
                    if box[2] - box[0] <= MIN_BOX_SIDE or box[3] - box[1] <= MIN_BOX_SIDE:
                        continue
                try:
                    labels.append(self.category_id_to_label[int(ann["category_id"])])
                except KeyError:
                    raise ValueError(f"{annotations}: annotation {ann.get('id')} has category_id "
                                     f"{ann['category_id']}, not among the json's categories") from None
                boxes.append(box)
                crowd.append(is_crowd)
                area.append(float(ann.get("area", w * h)))
                kept += 1
            if self.train and kept == 0:
                continue
            ids.append(image_id)
            files.append(str(im["file_name"]))
            sizes.append((int(im["width"]), int(im["height"])))
            offsets.append(offsets[-1] + kept)
        self.image_ids = np.asarray(ids, dtype=np.int64)
        self._files = np.asarray(files, dtype=np.str_)
        self._sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)  # (width, height)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self._labels = np.asarray(labels, dtype=np.int64)
        self._crowd = np.asarray(crowd, dtype=np.int64)
        self._area = np.asarray(area, dtype=np.float32)

    @property
    def num_categories(self) -> int:
        return len(self.label_to_category_id) - 1

    def __len__(self) -> int:
        return len(self.image_ids)

    def aspect_ratios(self) -> list[float]:
        """Width / height of every image, from the json (no image is decoded)."""
        return (self._sizes[:, 0] / self._sizes[:, 1]).tolist()

    def target(self, index: int) -> dict:
        """The target of one image, unflipped (no image is decoded)."""
        lo, hi = int(self._offsets[index]), int(self._offsets[index + 1])
        return {"boxes": torch.from_numpy(self._boxes[lo:hi].copy()),
                "labels": torch.from_numpy(self._labels[lo:hi].copy()),
                "iscrowd": torch.from_numpy(self._crowd[lo:hi].copy()),
                "area": torch.from_numpy(self._area[lo:hi].copy()),
                "image_id": int(self.image_ids[index])}

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        index = int(index)
        path = self.images / str(self._files[index])
        image = decode(str(path))
        width, height = (int(v) for v in self._sizes[index])
        if tuple(image.shape[-2:]) != (height, width):
            raise RuntimeError(f"{path}: decoded size {tuple(image.shape[-2:])} differs from the json's "
                               f"(height, width) = {(height, width)}")
        target = self.target(index)
        if self.flip:
            flip = flip_of(seed) if seed is not None else bool(torch.randint(2, ()))
            if flip:
                image = image.flip(-1)
                boxes = target["boxes"]
                target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        return image, target, index


def detection_collate(items) -> tuple[list[torch.Tensor], list[dict], torch.Tensor]:
    """(images, targets, indices): images and targets as lists (sizes differ), indices as an int64 tensor."""
    images, targets, indices = zip(*items) if items else ((), (), ())
    return list(images), list(targets), torch.as_tensor(indices, dtype=torch.long)


def build_coco(cfg) -> DataBundle:
    """Train (filtered, flipped) and val (everything) splits of the COCO 2017 layout under ``cfg.root``."""
    root = check_coco_root(cfg)
    augment = str(cfg.get("augment", "detection"))
    if augment not in AUGMENTS:
        raise ConfigError(f"dataset.augment: {cfg.name} supports {', '.join(AUGMENTS)}; got '{augment}'")
    try:
        train = CocoSplit(*_paths(root, "train"), train=True, flip=augment == "detection")
        test = CocoSplit(*_paths(root, "val"), train=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"dataset.root: cannot read {cfg.name} annotations under {root}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if train.label_to_category_id != test.label_to_category_id:
        raise ConfigError(f"dataset.root: the train and val annotations of {root} list different categories")
    if train.num_categories > int(cfg.num_classes):
        raise ConfigError(f"dataset.num_classes: {cfg.num_classes} is smaller than the {train.num_categories} "
                          f"categories in {root / 'annotations'}")
    return DataBundle(cfg.name, int(cfg.num_classes), int(cfg.image_size), train, test)


__all__ = ["CocoSplit", "build_coco", "check_coco_root", "decode", "detection_collate", "flip_of"]
