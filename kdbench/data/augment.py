"""The reference CIFAR training augmentation, as a function of a per-sample seed.

CRD / mdistiller train CIFAR with ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``: a uniform choice
among 9 x 9 crop offsets of the zero-padded 40 x 40 image and a fair flip, i.e. exactly ``NUM_VIEWS = 162``
equally likely views of each image. Here the view is ``view_of(seed)`` (a fixed mixing of the sample's seed,
uniform over the 162 views), so the same (run seed, epoch, sample) gets the same view whatever the number of
workers, ranks, or where a resumed run starts. Without a seed the view is drawn from torch's global RNG.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .sampler import _MIX_A, _MIX_B, sample_seed

PAD = 4
NUM_OFFSETS = 2 * PAD + 1
NUM_VIEWS = NUM_OFFSETS * NUM_OFFSETS * 2
_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class PadCropFlip:
    """Zero-pad ``pad``, crop back to the input size at one of the (2 pad + 1)^2 offsets, and flip if ``flip``
    draws it: a uniform choice among the finite views. With a seed the view is a fixed function of it, without
    one it is drawn from torch's global RNG. The defaults are the reference CIFAR augmentation (162 views,
    numbered as ``params``)."""

    seeded = True

    def __init__(self, pad: int = PAD, flip: bool = True):
        self.pad, self.flips = pad, 2 if flip else 1
        self.offsets = 2 * pad + 1
        self.views = self.offsets * self.offsets * self.flips

    def view_of(self, seed: int) -> int:
        """The view a sample seed selects (a fixed mixing of the seed, uniform over the views)."""
        return _splitmix64(int(seed)) % self.views

    def params(self, view: int) -> tuple[int, int, bool]:
        """(top, left, flip) of a view: the crop offset in the padded image and whether to flip horizontally."""
        top, left = view // (self.offsets * self.flips), (view // self.flips) % self.offsets
        return top, left, bool(self.flips == 2 and view % 2)

    def apply(self, image: torch.Tensor, view: int) -> torch.Tensor:
        """One view of a (C, H, W) image: zero-pad, crop H x W at the view's offset, flip if the view says so."""
        top, left, flip = self.params(view)
        h, w = image.shape[-2:]
        out = F.pad(image, (self.pad,) * 4)[..., top:top + h, left:left + w]
        return out.flip(-1) if flip else out

    def __call__(self, image: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        return self.apply(image, self.view_of(seed) if seed is not None else int(torch.randint(self.views, ())))


REFERENCE_VIEWS = PadCropFlip()


def view_of(seed: int) -> int:
    """The reference view (0 .. 161) a sample seed selects."""
    return REFERENCE_VIEWS.view_of(seed)


def view_params(view: int) -> tuple[int, int, bool]:
    """(top, left, flip) of a reference view."""
    return REFERENCE_VIEWS.params(view)


def apply_view(image: torch.Tensor, view: int) -> torch.Tensor:
    """One reference view of a (C, H, W) image: zero-pad 4, crop at the view's offset, flip if it says so."""
    return REFERENCE_VIEWS.apply(image, view)


class SeededCompose:
    """``before`` -> seeded step -> ``after``; other augmentations take their draws from a generator seeded
    with the sample seed (the process-wide RNG is left as it was)."""

    seeded = True

    def __init__(self, before, step, after):
        self.before, self.step, self.after = before, step, after

    def __call__(self, image, seed: int | None = None):
        image = self.before(image)
        if getattr(self.step, "seeded", False):
            image = self.step(image, seed)
        elif seed is None:
            image = self.step(image)
        else:
            with torch.random.fork_rng(devices=()):
                torch.manual_seed(seed)
                image = self.step(image)
        return self.after(image)


class SeededSequence:
    """Seeded steps in turn; step ``k`` gets its own seed derived from the sample seed (or none without one)."""

    seeded = True

    def __init__(self, *steps):
        self.steps = steps

    def __call__(self, image, seed: int | None = None):
        for k, step in enumerate(self.steps):
            image = step(image, None if seed is None else (seed if k == 0 else sample_seed(seed, k)))
        return image


_M = np.uint64


def view_ids(seed_of_epoch: int, indices: np.ndarray) -> np.ndarray:
    """``view_of(sample_seed(seed_of_epoch, i))`` for every index at once (uint64 arithmetic wraps mod 2^64,
    exactly as the scalar functions reduce)."""
    with np.errstate(over="ignore"):
        i = indices.astype(np.uint64)
        base = _M(seed_of_epoch % (1 << 64))
        seed = (base * _M(_MIX_A) + (i + _M(1)) * _M(_MIX_B)) & _M((1 << 63) - 1)
        x = seed + _M(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _M(30))) * _M(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _M(27))) * _M(0x94D049BB133111EB)
        x = x ^ (x >> _M(31))
    return (x % _M(NUM_VIEWS)).astype(np.int64)


def crop_flip_batch(padded: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Batched ``apply_view``: ``padded`` (B, C, H + 8, W + 8) zero-padded images, ``views`` (B,) view ids on the
    same device; returns (B, C, H, W). Pure indexing, so it is exact for any dtype and runs on any device."""
    b, _, hp, wp = padded.shape
    h, w = hp - 2 * PAD, wp - 2 * PAD
    top = torch.div(views, NUM_OFFSETS * 2, rounding_mode="floor")
    left = torch.div(views, 2, rounding_mode="floor") % NUM_OFFSETS
    flip = (views % 2).bool()
    cols = torch.arange(w, device=padded.device)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + left[:, None]  # (B, W), flipped where asked
    rows = top[:, None] + torch.arange(h, device=padded.device)  # (B, H)
    batch = torch.arange(b, device=padded.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)
