"""CIFAR VGGs with batch norm (vgg8, vgg11, vgg13, vgg16, vgg19).

Architecture of the ``vgg*_bn`` models of the CRD benchmark
(HobbitLong/RepDistiller ``models/vgg.py``, identical in megvii-research/mdistiller
``mdistiller/models/cifar/vgg.py``): five conv groups ``block0..block4`` of
conv3x3(bias)-BN-ReLU units whose last ReLU is left out of the group (so each
group ends at a BN), 2x2 max pooling after groups 0, 1, 2 (after group 3 only for
64x64 inputs, as in the reference), global average pooling and a single linear
``classifier`` (512 -> classes; no FC stack).  vgg8 is the one-conv-per-group
"S" configuration.

Stage features (mdistiller ``feats["feats"]``): ReLU of each group output
(5 entries); pre-activations: group 0 after its ReLU, then the raw BN output of
groups 1-4.  At 32x32 input the last two stages are both 4x4.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import CifarNet, build_model, init_fan_out_normal, register, stage_info, zoo_cfg

__all__ = ["CifarVGG", "VGG_CFGS", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19"]

# conv widths per group
VGG_CFGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _pool_at_64(x: torch.Tensor, height: int) -> torch.Tensor:
    """The reference's max-pool between groups 3 and 4, which runs only for 64x64 inputs."""
    return F.max_pool2d(x, kernel_size=2, stride=2) if height == 64 else x


torch.fx.wrap("_pool_at_64")  # a leaf for torch.fx: the input height is only known when the graph runs


def _make_group(in_chs: int, widths: Sequence[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i, w in enumerate(widths):
        if i > 0:
            mods.append(nn.ReLU(inplace=True))
        mods += [nn.Conv2d(in_chs, w, kernel_size=3, padding=1), nn.BatchNorm2d(w)]
        in_chs = w
    return nn.Sequential(*mods)


class CifarVGG(CifarNet):
    """VGG-BN with five conv groups and a linear classifier."""

    _head_attr = "classifier"
    _stage_modules = tuple((f"block{i}", f"act{i}") for i in range(5))

    def __init__(self, cfg: Sequence[Sequence[int]] = VGG_CFGS["vgg13"], num_classes: int = 100, in_chans: int = 3,
                 global_pool: str = "avg"):
        super().__init__()
        if len(cfg) != 5:
            raise ValueError("a CIFAR VGG config has 5 conv groups")
        widths = [int(g[-1]) for g in cfg]
        self.num_classes = int(num_classes)
        self.num_features = widths[4]

        in_chs = in_chans
        for i, group in enumerate(cfg):
            setattr(self, f"block{i}", _make_group(in_chs, group))
            in_chs = group[-1]
        # ReLUs that follow each group (parameter-free; the features are their outputs)
        for i in range(5):
            setattr(self, f"act{i}", nn.ReLU())
        self._init_pool(global_pool)
        self.classifier = self._make_classifier(self.num_classes)

        self.feature_info = stage_info(widths, [1, 2, 4, 8, 8], [f"act{i}" for i in range(5)])

        init_fan_out_normal(self)

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BN closing conv groups 1-4, one per pre-activation map after the stem (mdistiller
        ``get_bn_before_relu``)."""
        return [getattr(self, f"block{i}")[-1] for i in range(1, 5)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        x = self.act0(self.block0(x))
        x = self.act1(self.block1(F.max_pool2d(x, kernel_size=2, stride=2)))
        x = self.act2(self.block2(F.max_pool2d(x, kernel_size=2, stride=2)))
        x = self.act3(self.block3(F.max_pool2d(x, kernel_size=2, stride=2)))
        return self.act4(self.block4(_pool_at_64(x, height)))

    def _enter_stage(self, index: int, x: torch.Tensor, height: int) -> torch.Tensor:
        if index == 0:
            return x
        return F.max_pool2d(x, kernel_size=2, stride=2) if index < 4 else _pool_at_64(x, height)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def _forward_impl(self, x: torch.Tensor, want_preact: bool):
        height = x.shape[2]
        x = self.act0(self.block0(x))
        feats, preacts = [x], [x]
        for i in range(1, 5):
            # the reference pools between groups 3 and 4 only for 64x64 inputs
            if i < 4 or height == 64:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            pre = getattr(self, f"block{i}")(x)
            x = getattr(self, f"act{i}")(pre)
            feats.append(x)
            preacts.append(pre)
        return x, feats, preacts


def vgg8(num_classes: int = 100, **kwargs) -> CifarVGG:
    return CifarVGG(VGG_CFGS["vgg8"], num_classes=num_classes, **kwargs)


def vgg11(num_classes: int = 100, **kwargs) -> CifarVGG:
    return CifarVGG(VGG_CFGS["vgg11"], num_classes=num_classes, **kwargs)


def vgg13(num_classes: int = 100, **kwargs) -> CifarVGG:
    return CifarVGG(VGG_CFGS["vgg13"], num_classes=num_classes, **kwargs)


def vgg16(num_classes: int = 100, **kwargs) -> CifarVGG:
    return CifarVGG(VGG_CFGS["vgg16"], num_classes=num_classes, **kwargs)


def vgg19(num_classes: int = 100, **kwargs) -> CifarVGG:
    return CifarVGG(VGG_CFGS["vgg19"], num_classes=num_classes, **kwargs)


_CFG = zoo_cfg(pool_size=(4, 4), first_conv="block0.0", classifier="classifier")


@register(_CFG)
def cifar_vgg8(pretrained=False, **kwargs):
    """VGG-8-BN (one conv per group)."""
    return build_model("cifar_vgg8", vgg8, pretrained, kwargs, feature_levels=5)


@register(_CFG)
def cifar_vgg11(pretrained=False, **kwargs):
    """VGG-11-BN."""
    return build_model("cifar_vgg11", vgg11, pretrained, kwargs, feature_levels=5)


@register(_CFG)
def cifar_vgg13(pretrained=False, **kwargs):
    """VGG-13-BN."""
    return build_model("cifar_vgg13", vgg13, pretrained, kwargs, feature_levels=5)


@register(_CFG)
def cifar_vgg16(pretrained=False, **kwargs):
    """VGG-16-BN."""
    return build_model("cifar_vgg16", vgg16, pretrained, kwargs, feature_levels=5)


@register(_CFG)
def cifar_vgg19(pretrained=False, **kwargs):
    """VGG-19-BN."""
    return build_model("cifar_vgg19", vgg19, pretrained, kwargs, feature_levels=5)
