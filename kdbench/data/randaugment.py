"""MLKD's strong view: FixMatch's RandAugment variant with random magnitudes, followed by Cutout.

Each call applies ``NUM_OPS = 2`` operations drawn uniformly, with replacement, from ``OPS``; each operation's
magnitude is drawn uniformly from its own ``[low, high]`` range (the nominal magnitude 10 of ``RandAugment(2, 10)``
is unused), and then a square of side ``U[0, 0.5) * width`` is filled with grey (125, 123, 114) at a random
position. This is the op list, ranges and draw order of Jin-Ying/Multi-Level-Logit-Distillation @ 5ee473f,
``mdistiller/dataset/cifar100.py`` (``augment_list``, ``RandAugment``, ``Cutout``), which MLKD applies after the
crop and flip of its strong view; Sohn et al., "FixMatch", NeurIPS 2020 (``RandAugmentMC``) introduced it.

Draws: Python's ``random`` for the operations, magnitudes and cutout size, numpy's for the cutout position (as
the reference), from generators seeded with the sample seed when one is given, else the process-wide ones. The
reference draws the cutout corner with ``np.random.uniform(w)``, i.e. ``low=w, high=1``: uniform on ``[1, w)``,
not ``[0, w)``; kept, so that the same draws give the same image.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

NUM_OPS = 2
OPS = (  # (name, low, high)
    ("auto_contrast", 0.0, 1.0), ("brightness", 0.05, 0.95), ("color", 0.05, 0.95), ("contrast", 0.05, 0.95),
    ("equalize", 0.0, 1.0), ("identity", 0.0, 1.0), ("posterize", 4.0, 8.0), ("rotate", -30.0, 30.0),
    ("sharpness", 0.05, 0.95), ("shear_x", -0.3, 0.3), ("shear_y", -0.3, 0.3), ("solarize", 0.0, 256.0),
    ("translate_x", -0.3, 0.3), ("translate_y", -0.3, 0.3),
)
CUTOUT_MAX = 0.5
CUTOUT_FILL = (125, 123, 114)


def apply_op(image: Image.Image, name: str, v: float) -> Image.Image:
    """One operation at magnitude ``v`` (shears and translations as affine maps, nearest sampling, black fill)."""
    w, h = image.size
    if name == "auto_contrast":
        return ImageOps.autocontrast(image)
    if name == "equalize":
        return ImageOps.equalize(image)
    if name == "identity":
        return image
    if name in ("brightness", "color", "contrast", "sharpness"):
        enhancer = {"brightness": ImageEnhance.Brightness, "color": ImageEnhance.Color,
                    "contrast": ImageEnhance.Contrast, "sharpness": ImageEnhance.Sharpness}[name]
        return enhancer(image).enhance(v)
    if name == "posterize":
        return ImageOps.posterize(image, max(1, int(v)))
    if name == "rotate":
        return image.rotate(v)
    if name == "solarize":
        return ImageOps.solarize(image, v)
    affine = {"shear_x": (1, v, 0, 0, 1, 0), "shear_y": (1, 0, 0, v, 1, 0),
              "translate_x": (1, 0, v * w, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, v * h)}[name]
    return image.transform(image.size, Image.AFFINE, affine)


def cutout(image: Image.Image, side: float, np_rng) -> Image.Image:
    """Fill a ``side`` x ``side`` square (clipped at the border) with ``CUTOUT_FILL``."""
    if side <= 0:
        return image
    w, h = image.size
    x0, y0 = np_rng.uniform(w), np_rng.uniform(h)  # low=w, high=1: see the module docstring
    x0, y0 = int(max(0, x0 - side / 2.0)), int(max(0, y0 - side / 2.0))
    image = image.copy()
    ImageDraw.Draw(image).rectangle((x0, y0, min(w, x0 + side), min(h, y0 + side)), CUTOUT_FILL)
    return image


def rand_augment(image: Image.Image, rng=random, np_rng=np.random) -> Image.Image:
    """The strong-view operations on a PIL RGB image, drawing from ``rng`` (``random`` API) and ``np_rng``."""
    for name, low, high in rng.choices(OPS, k=NUM_OPS):
        image = apply_op(image, name, low + (high - low) * rng.random())
    return cutout(image, rng.random() * CUTOUT_MAX * image.size[0], np_rng)


class FixMatchRandAugment:
    """``rand_augment`` on a uint8 (C, H, W) tensor; with a seed, its draws are a fixed function of the seed."""

    seeded = True

    def __call__(self, image: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        if seed is None:
            out = rand_augment(pil)
        else:
            out = rand_augment(pil, random.Random(seed), np.random.RandomState(seed % 2**32))
        return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
