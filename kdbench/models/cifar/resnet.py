"""CIFAR ResNets (resnet8 ... resnet110, resnet8x4, resnet32x4).

Architecture of the CIFAR ResNet family used by the CRD benchmark
(HobbitLong/RepDistiller ``models/resnet.py``, reused unchanged by
megvii-research/mdistiller ``mdistiller/models/cifar/resnet.py``): a 3x3 stem
conv-BN-ReLU followed by three stages of ``n = (depth - 2) / 6`` post-activation
basic blocks (strides 1, 2, 2) and a linear classifier ``fc`` on the globally
averaged last stage.  ``resnet8x4`` / ``resnet32x4`` use widths 32-64-128-256
instead of 16-16-32-64.  Module names, parameter shapes, construction order and
initialisation follow the reference, so its checkpoints load with
``strict=True``.

Stage features (mdistiller ``feats["feats"]``): stem output, layer1, layer2,
layer3; pre-activations: stem output (already activated), then the sum
(residual + branch) of each stage's last block before its ReLU.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import CifarNet, build_model, init_kaiming_fan_out, register, run_stages, stage_info, zoo_cfg

__all__ = [
    "BasicBlock", "CifarResNet",
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4",
]


def _conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus identity or 1x1-conv-BN ``downsample``, then ReLU."""

    expansion = 1

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_chs, out_chs, stride)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = _conv3x3(out_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample = downsample

    def forward_with_preact(self, x: torch.Tensor):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        preact = self.bn2(self.conv2(out)) + shortcut
        return F.relu(preact), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class CifarResNet(CifarNet):
    """CIFAR ResNet with basic blocks; ``depth = 6n + 2``, ``widths`` = (stem, stage1, stage2, stage3)."""

    _head_attr = "fc"
    _stage_modules = (("conv1", "bn1", "relu"), ("layer1",), ("layer2",), ("layer3",))

    def __init__(self, depth: int = 20, widths: Sequence[int] = (16, 16, 32, 64), num_classes: int = 100,
                 in_chans: int = 3, global_pool: str = "avg"):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}")
        if len(widths) != 4:
            raise ValueError(f"widths must have 4 entries (stem + 3 stages), got {widths}")
        n = (depth - 2) // 6
        w = [int(c) for c in widths]
        self.depth = depth
        self.num_classes = int(num_classes)
        self.num_features = w[3] * BasicBlock.expansion

        self.conv1 = nn.Conv2d(in_chans, w[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self._in_chs = w[0]
        self.layer1 = self._make_stage(w[1], n, stride=1)
        self.layer2 = self._make_stage(w[2], n, stride=2)
        self.layer3 = self._make_stage(w[3], n, stride=2)
        self._init_pool(global_pool)
        self.fc = self._make_classifier(self.num_classes)

        self.feature_info = stage_info(
            [w[0], w[1], w[2], w[3]], [1, 1, 2, 4], ["relu", "layer1", "layer2", "layer3"]
        )

        # same scheme (and RNG consumption order) as the reference
        init_kaiming_fan_out(self)

    def _make_stage(self, out_chs: int, num_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_chs != out_chs:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_chs, out_chs, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chs),
            )
        blocks = [BasicBlock(self._in_chs, out_chs, stride, downsample)]
        self._in_chs = out_chs
        blocks += [BasicBlock(out_chs, out_chs) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BN ending the residual branch of each stage's last block (``bn2``), one per pre-activation map
        after the stem (mdistiller ``get_bn_before_relu``; OFD derives its margins from them)."""
        return [stage[-1].bn2 for stage in (self.layer1, self.layer2, self.layer3)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        return self.layer3(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    def _forward_impl(self, x: torch.Tensor, want_preact: bool):
        return run_stages(self.relu(self.bn1(self.conv1(x))), (self.layer1, self.layer2, self.layer3))


_SLIM = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)


def resnet8(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(8, _SLIM, num_classes=num_classes, **kwargs)


def resnet14(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(14, _SLIM, num_classes=num_classes, **kwargs)


def resnet20(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(20, _SLIM, num_classes=num_classes, **kwargs)


def resnet32(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(32, _SLIM, num_classes=num_classes, **kwargs)


def resnet44(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(44, _SLIM, num_classes=num_classes, **kwargs)


def resnet56(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(56, _SLIM, num_classes=num_classes, **kwargs)


def resnet110(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(110, _SLIM, num_classes=num_classes, **kwargs)


def resnet8x4(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(8, _X4, num_classes=num_classes, **kwargs)


def resnet32x4(num_classes: int = 100, **kwargs) -> CifarResNet:
    return CifarResNet(32, _X4, num_classes=num_classes, **kwargs)


# ---- timm registry entry points ------------------------------------------

_CFG = zoo_cfg(pool_size=(8, 8), first_conv="conv1", classifier="fc")

@register(_CFG)
def cifar_resnet8(pretrained=False, **kwargs):
    """CIFAR ResNet-8, widths 16-16-32-64."""
    return build_model("cifar_resnet8", resnet8, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_resnet14(pretrained=False, **kwargs):
    """CIFAR ResNet-14, widths 16-16-32-64."""
    return build_model("cifar_resnet14", resnet14, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_resnet20(pretrained=False, **kwargs):
    """CIFAR ResNet-20, widths 16-16-32-64."""
    return build_model("cifar_resnet20", resnet20, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_resnet32(pretrained=False, **kwargs):
    """CIFAR ResNet-32, widths 16-16-32-64."""
    return build_model("cifar_resnet32", resnet32, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_resnet44(pretrained=False, **kwargs):
    """CIFAR ResNet-44, widths 16-16-32-64."""
    return build_model("cifar_resnet44", resnet44, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_resnet56(pretrained=False, **kwargs):
    """CIFAR ResNet-56, widths 16-16-32-64."""
    return build_model("cifar_resnet56", resnet56, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_resnet110(pretrained=False, **kwargs):
    """CIFAR ResNet-110, widths 16-16-32-64."""
    return build_model("cifar_resnet110", resnet110, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_resnet8x4(pretrained=False, **kwargs):
    """CIFAR ResNet-8, 4x widths 32-64-128-256."""
    return build_model("cifar_resnet8x4", resnet8x4, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_resnet32x4(pretrained=False, **kwargs):
    """CIFAR ResNet-32, 4x widths 32-64-128-256."""
    return build_model("cifar_resnet32x4", resnet32x4, pretrained, kwargs, feature_levels=4)
