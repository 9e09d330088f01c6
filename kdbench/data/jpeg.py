"""JPEG input as tensors: read the file bytes, decode with ``torchvision.io.decode_jpeg`` (libjpeg-turbo on the
CPU, batched nvJPEG on a CUDA device), augment uint8 tensors with ``torchvision.transforms.v2``.

Classification (ImageFolder trees, ``dataset.augment=imagenet``; ``trainer.loader=auto`` or ``jpeg``):

- ``crop_flip_params(seed, height, width, size) -> (top, left, h, w, flip)``: the RandomResizedCrop box
  (scale 0.08-1, ratio 3/4-4/3) and horizontal flip (p=0.5) that the PIL path
  (:func:`kdbench.data.base.build_transforms` ``imagenet``, under :class:`SeededCompose`) draws for the same sample
  seed: the same v2 transforms' draws from torch's RNG seeded with the sample seed, so (seed, epoch, index) gives
  the same boxes and flips on both paths (resume and DDP stay exact).
- ``decode_batch(data, device) -> (images, fallbacks)``: a list of encoded files (uint8 tensors) to CHW uint8 RGB
  tensors on ``device``; files the decoder refuses (a PNG named .JPEG; on nvJPEG also CMYK and others) are decoded
  by PIL and counted.
- ``train_view(image, seed, size)`` / ``eval_view(image, size)``: one uint8 view (crop box + flip, resized with
  antialiased bilinear; test: shorter side to ``size / 0.875``, centre crop ``size``).
- ``JpegLoader``: batches of :class:`~kdbench.data.batch.Batch` on the device from a torch DataLoader whose
  workers read (and on a CPU device decode and augment) whole batches; normalisation happens batched on the
  device. ``build_jpeg_loaders(...)`` makes the train and test loaders; ``loader_workers(n)`` caps workers at
  the CPUs this process may use.

Detection (boxes are (N, 4) ``xyxy`` pixel tensors; images CHW tensors on any device):

- ``draw_short_side(seed, sizes) -> int``: one of ``sizes`` chosen uniformly by the seed (Detectron2's
  ``ResizeShortestEdge(..., "choice")``).
- ``draw_flip(seed, p=0.5) -> bool``.
- ``resize_short_side(image, boxes, short, max_size) -> (image, boxes)``: scale so the shorter side is ``short``
  unless the longer would exceed ``max_size`` (then the longer is ``max_size``); boxes scale with the image.
- ``hflip_with_boxes(image, boxes) -> (image, boxes)``: mirror horizontally; ``x1' = W - x2``, ``x2' = W - x1``.
"""

from __future__ import annotations

import io
import logging
from typing import Sequence

import torch
from PIL import Image
from torch.utils.data import BatchSampler, DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from .base import IMAGENET_CROP_FRACTION, loader_workers  # noqa: F401  (loader_workers: kdbench-bench)
from .batch import Batch

log = logging.getLogger("kdbench")

_RRC = T.RandomResizedCrop(224, antialias=True)  # only its parameter draw is used (independent of the output size)
FLIP_P = 0.5


def crop_flip_params(seed: int, height: int, width: int) -> tuple[int, int, int, int, bool]:
    """(top, left, h, w, flip) for a ``height`` x ``width`` image: RandomResizedCrop's box, then
    RandomHorizontalFlip's draw (flip iff ``rand < 0.5``), from torch's RNG seeded with ``seed`` (the process RNG is
    left as it was), as :class:`~kdbench.data.augment.SeededCompose` runs the PIL path."""
    with torch.random.fork_rng(devices=()):
        torch.default_generator.manual_seed(seed)  # what torch.manual_seed does to the CPU RNG, minus device RNGs
        p = _RRC.make_params([torch.empty((1, height, width), dtype=torch.uint8)])
        flip = bool(torch.rand(1) < FLIP_P)
    return p["top"], p["left"], p["height"], p["width"], flip


def _pil_decode(data: torch.Tensor) -> torch.Tensor:
    image = Image.open(io.BytesIO(data.numpy().tobytes())).convert("RGB")
    return F.pil_to_tensor(image)


def decode_batch(data: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], int]:
    """Decode encoded files (1-D uint8 CPU tensors) to RGB (3, H, W) uint8 tensors on ``device`` in one batched
    ``decode_jpeg`` call; if it refuses, each file alone, then PIL for those the decoder refuses (counted)."""
    device = torch.device(device)
    data = list(data)
    try:
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device)), 0
    except RuntimeError:
        pass
    images, fallbacks = [], 0
    for d in data:
        try:
            images.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            continue
        except RuntimeError:
            pass
        if device.type != "cpu":
            try:  # nvJPEG refuses some JPEGs libjpeg-turbo reads (CMYK, ...)
                images.append(decode_jpeg(d, mode=ImageReadMode.RGB).to(device))
                continue
            except RuntimeError:
                pass
        images.append(_pil_decode(d).to(device))
        fallbacks += 1
    return images, fallbacks


def train_view(image: torch.Tensor, seed: int, size: int) -> torch.Tensor:
    """RandomResizedCrop to ``size`` (antialiased bilinear) + flip, as drawn by ``crop_flip_params(seed, ...)``."""
    top, left, h, w, flip = crop_flip_params(seed, *image.shape[-2:])
    out = F.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    return out.flip(-1) if flip else out


def eval_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side to ``round(size / 0.875)`` (256 for 224), centre crop ``size`` (torchvision's ImageNet test)."""
    out = F.resize(image, [int(round(size / IMAGENET_CROP_FRACTION))], antialias=True)
    return F.center_crop(out, [size, size])


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 ``(x / 255 - mean) / std`` (the PIL path's ToDtype(scale) + Normalize),
    computed as ``x * (1 / (255 std)) - mean / std`` in one pass (equal to it within float32 rounding, ~1e-6)."""
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.to(torch.float32).mul_(1.0 / (255.0 * std)).sub_(mean / std)


class JpegBatches(Dataset):
    """Batched reads of ``samples`` ((path, target) pairs, as ImageFolder's): ``self[keys]`` with ``keys`` a list
    of indices or (index, seed) pairs returns (uint8 images (B, 3, S, S), targets, index, fallbacks), decoded and
    augmented here (``decode=True``: CPU workers), or (list of encoded files, targets, index, seeds) for the
    training process to decode on its device."""

    def __init__(self, samples, size: int, train: bool, decode: bool = True):
        self.samples, self.size, self.train, self.decode = list(samples), int(size), train, decode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, keys):
        index = [k[0] if isinstance(k, tuple) else k for k in keys]
        seeds = [k[1] if isinstance(k, tuple) else None for k in keys]
        data, targets = [], []
        for i in index:
            path, target = self.samples[i]
            with open(path, "rb") as f:
                data.append(torch.frombuffer(bytearray(f.read()), dtype=torch.uint8))
            targets.append(int(target))
        targets, index = torch.tensor(targets), torch.tensor(index)
        if not self.decode:
            return data, targets, index, seeds
        images, fallbacks = decode_batch(data)
        return augment_batch(images, seeds, self.size, self.train), targets, index, fallbacks


def augment_batch(images: Sequence[torch.Tensor], seeds: Sequence[int | None], size: int, train: bool) -> torch.Tensor:
    """Each image's train view (by its seed; a random one without a seed) or test view, stacked (B, 3, S, S)."""
    if not train:
        return torch.stack([eval_view(im, size) for im in images])
    seeds = [int(torch.randint(2**62, ())) if s is None else s for s in seeds]
    return torch.stack([train_view(im, s, size) for im, s in zip(images, seeds)])


class JpegLoader:
    """Yields :class:`Batch` on ``device``: normalised float32 images (channels_last if asked), targets, index.
    On CUDA the workers only read files and the batch is decoded by nvJPEG on the device; on a CPU device the
    workers decode and augment. ``fallbacks`` counts the files PIL had to decode (logged after each pass)."""

    def __init__(self, samples, sampler, batch_size: int, size: int, train: bool, mean, std, device,
                 channels_last: bool = False, workers: int | None = None):
        self.device, self.size, self.train = torch.device(device), int(size), train
        self.mean, self.std, self.fallbacks = list(mean), list(std), 0
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        on_gpu = self.device.type == "cuda"
        workers = loader_workers(workers)
        extra = dict(persistent_workers=True, prefetch_factor=4 if on_gpu else 2) if workers > 0 else {}
        self.loader = DataLoader(JpegBatches(samples, size, train, decode=not on_gpu), batch_size=None,
                                 sampler=BatchSampler(sampler, batch_size, drop_last=False), num_workers=workers,
                                 pin_memory=on_gpu, collate_fn=_identity, **extra)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        before = self.fallbacks
        for images, targets, index, extra in self.loader:
            if self.device.type == "cuda":  # extra = seeds; decode on the device
                decoded, fallbacks = decode_batch(images, self.device)
                images = augment_batch(decoded, extra, self.size, self.train)
            else:
                fallbacks = int(extra)
            self.fallbacks += fallbacks
            images = normalize(images.to(self.device, non_blocking=True), self.mean, self.std)
            yield Batch(images.contiguous(memory_format=self.memory_format),
                        targets.to(self.device, non_blocking=True), index.to(self.device, non_blocking=True))
        if self.fallbacks > before:
            log.info("JPEG input: %d file(s) decoded by PIL this pass (the JPEG decoder refused them; %d so far)",
                     self.fallbacks - before, self.fallbacks)


def _identity(x):
    return x


def build_jpeg_loaders(train_samples, test_samples, train_sampler, test_sampler, batch_size: int, eval_batch: int,
                       size: int, mean, std, device, channels_last: bool = False, workers: int | None = None):
    """(train, test) :class:`JpegLoader` over ImageFolder ``samples`` lists, ordered by the given samplers."""
    kw = dict(size=size, mean=mean, std=std, device=device, channels_last=channels_last, workers=workers)
    return (JpegLoader(train_samples, train_sampler, batch_size, train=True, **kw),
            JpegLoader(test_samples, test_sampler, eval_batch, train=False, **kw))


# -- detection ---------------------------------------------------------------------------------------------------

def draw_short_side(seed: int, sizes: Sequence[int]) -> int:
    """One of ``sizes``, uniformly, from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    return int(sizes[int(torch.randint(len(sizes), (), generator=g))])


def draw_flip(seed: int, p: float = FLIP_P) -> bool:
    """Whether to flip: ``rand < p`` from a generator seeded with ``seed`` (a different stream than the size)."""
    g = torch.Generator().manual_seed((int(seed) * 2654435761 + 1) % (2**63))
    return bool(torch.rand((), generator=g) < p)


def _boxes(boxes: torch.Tensor, height: int, width: int) -> tv_tensors.BoundingBoxes:
    return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))


def resize_short_side(image: torch.Tensor, boxes: torch.Tensor, short: int, max_size: int):
    """Resize (C, H, W) ``image`` (antialiased bilinear) by ``s = min(short / min(H, W), max_size / max(H, W))``
    to ``(round(H s), round(W s))``, and its (N, 4) xyxy ``boxes`` with it (x by the width ratio, y by the height
    ratio): Detectron2's ResizeShortestEdge rule. Returns (image, boxes) as plain tensors."""
    h, w = image.shape[-2:]
    scale = min(short / min(h, w), max_size / max(h, w))
    new = [int(round(h * scale)), int(round(w * scale))]
    out = F.resize(image, new, antialias=True)
    return out, F.resize(_boxes(boxes, h, w), new).as_subclass(torch.Tensor)


def hflip_with_boxes(image: torch.Tensor, boxes: torch.Tensor):
    """Mirror (C, H, W) ``image`` left-right and its (N, 4) xyxy ``boxes``: ``(W - x2, y1, W - x1, y2)``."""
    h, w = image.shape[-2:]
    return image.flip(-1), F.horizontal_flip(_boxes(boxes, h, w)).as_subclass(torch.Tensor)


def jpeg_unavailable(data, augment: str) -> str | None:
    """Why the tensor path cannot serve this dataset (None when it can): it reads ImageFolder trees (both
    splits) with the ``imagenet`` augmentation."""
    from torchvision.datasets import DatasetFolder

    if not (isinstance(data.train, DatasetFolder) and isinstance(data.test, DatasetFolder)):
        return f"{data.name} is not an ImageFolder tree of files"
    if augment != "imagenet":
        return f"dataset.augment={augment} (the JPEG tensor path implements 'imagenet')"
    return None
