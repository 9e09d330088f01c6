"""Width / depth variants of the CIFAR zoo's ResNet, WRN and VGG families, registered in timm's registry (module
``grid``) so that they build through ``kdbench.models.create_model`` by name, in the search and in any later
``kdbench student.name=<name>`` run, exactly as the zoo's own models do.

The variants are built by the zoo's own classes (``CifarResNet``, ``WideResNet``, ``CifarVGG``) through the zoo's
timm entry-point helper, so they answer the zoo's whole interface (stage maps, pre-activation maps, checkpoints in
the community format). Names:

- ``cifar_resnet<depth>_w<width>``: CIFAR ResNet of depth ``6n + 2``; stage widths ``width, 2 width, 4 width``, stem
  ``width`` up to 16 and ``width / 2`` above (at least 16). ``resnet20`` is ``cifar_resnet20_w16``, ``resnet8x4``
  ``cifar_resnet8_w64``.
- ``cifar_wrn_<depth>_<k>``: WRN-depth-k (``depth = 6n + 4``), as ``wrn_16_2``.
- ``cifar_vgg<n>_w<width>``: VGG-n-BN with every conv group's width scaled by ``width / 64`` (``vgg13`` is
  ``cifar_vgg13_w64``).

Every combination of the allowed depths and widths below is registered, so a grid a user configures from these
values is always trainable by name; the points the zoo already has (``resnet20``, ``resnet8x4``, ``wrn_16_2``,
``vgg13``, ...) are the zoo's models and keep the zoo's names (:func:`zoo_equivalent`).
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict

from timm.models import register_model

from ._base import build_model, zoo_cfg
from .resnet import CifarResNet
from .vgg import VGG_CFGS, CifarVGG
from .wrn import WideResNet

# the allowed values per family (depth, then width: stage-1 width for ResNet, widen factor for WRN, first conv
# group width for VGG); a search grid picks from these
ALLOWED = {
    "resnet": ((8, 14, 20, 26, 32, 38, 44, 50, 56, 110), (8, 16, 24, 32, 48, 64, 96, 128)),
    "wrn": ((10, 16, 22, 28, 34, 40), (1, 2, 3, 4, 6, 8)),
    "vgg": ((8, 11, 13, 16, 19), (16, 24, 32, 48, 64)),
}
FAMILIES = tuple(ALLOWED)

# timm reads the pretrained_cfg of each registered name from its module's ``default_cfgs``
default_cfgs: Dict[str, Dict[str, Any]] = {}
__all__ = ["ALLOWED", "FAMILIES", "GridPoint", "grid_name", "parse_grid_name", "zoo_equivalent"]

_CFGS = {
    "resnet": zoo_cfg(pool_size=(8, 8), first_conv="conv1", classifier="fc"),
    "wrn": zoo_cfg(pool_size=(8, 8), first_conv="conv1", classifier="fc"),
    "vgg": zoo_cfg(pool_size=(4, 4), first_conv="block0.0", classifier="classifier"),
}
_LEVELS = {"resnet": 4, "wrn": 4, "vgg": 5}
_PATTERNS = {
    "resnet": re.compile(r"cifar_resnet(\d+)_w(\d+)"),
    "wrn": re.compile(r"cifar_wrn_(\d+)_(\d+)"),
    "vgg": re.compile(r"cifar_vgg(\d+)_w(\d+)"),
}


@dataclass(frozen=True, order=True)
class GridPoint:
    family: str
    depth: int
    width: int

    @property
    def name(self) -> str:
        return grid_name(self.family, self.depth, self.width)


def grid_name(family: str, depth: int, width: int) -> str:
    """The name of a grid point: the zoo's where the zoo has it, else its registry name (module docstring)."""
    zoo = _ZOO_POINTS.get(GridPoint(family, depth, width))
    if zoo is not None:
        return zoo
    if family == "resnet":
        return f"cifar_resnet{depth}_w{width}"
    if family == "wrn":
        return f"cifar_wrn_{depth}_{width}"
    if family == "vgg":
        return f"cifar_vgg{depth}_w{width}"
    raise ValueError(f"unknown grid family {family!r}; valid: {', '.join(FAMILIES)}")


def parse_grid_name(name: str) -> GridPoint | None:
    """The grid point a registry name stands for (None: not a grid name)."""
    for family, pattern in _PATTERNS.items():
        match = pattern.fullmatch(str(name).lower())
        if match:
            point = GridPoint(family, int(match.group(1)), int(match.group(2)))
            depths, widths = ALLOWED[family]
            return point if point.depth in depths and point.width in widths else None
    return None


def resnet_widths(width: int) -> tuple[int, int, int, int]:
    stem = width if width <= 16 else max(16, width // 2)
    return stem, width, 2 * width, 4 * width


def vgg_config(depth: int, width: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(c * width // 64 for c in group) for group in VGG_CFGS[f"vgg{depth}"])


# the zoo's canonical names of the grid points the zoo already has
_ZOO_POINTS = {
    **{GridPoint("resnet", d, 16): f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)},
    GridPoint("resnet", 8, 64): "resnet8x4",
    GridPoint("resnet", 32, 64): "resnet32x4",
    **{GridPoint("wrn", d, k): f"wrn_{d}_{k}" for d in (16, 40) for k in (1, 2)},
    **{GridPoint("vgg", d, 64): f"vgg{d}" for d in (8, 11, 13, 16, 19)},
}


def zoo_equivalent(point: GridPoint) -> str | None:
    """The zoo's name for ``point`` where the zoo has that architecture (``resnet20``, ``wrn_16_2``, ``vgg13``)."""
    return _ZOO_POINTS.get(point)


def _constructor(point: GridPoint) -> Callable[..., Any]:
    if point.family == "resnet":
        return functools.partial(CifarResNet, point.depth, resnet_widths(point.width))
    if point.family == "wrn":
        return functools.partial(WideResNet, point.depth, point.width)
    return functools.partial(CifarVGG, vgg_config(point.depth, point.width))


def _register(point: GridPoint) -> None:
    name = point.name
    ctor, levels = _constructor(point), _LEVELS[point.family]

    def entry(pretrained=False, **kwargs):
        return build_model(name, ctor, pretrained, kwargs, feature_levels=levels)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"DisWOT search grid: {point.family} depth {point.depth}, width {point.width}."
    default_cfgs[name] = _CFGS[point.family]
    setattr(sys.modules[__name__], name, entry)
    register_model(entry)


for _family, (_depths, _widths) in ALLOWED.items():
    for _depth in _depths:
        for _width in _widths:
            if GridPoint(_family, _depth, _width) not in _ZOO_POINTS:
                _register(GridPoint(_family, _depth, _width))
