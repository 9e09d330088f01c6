"""CIFAR ResNet18 / ResNet34 / ResNet50 (the references' ``resnetv2.py``).

Architecture of the ImageNet-width ResNets adapted to 32x32 inputs, as in
HobbitLong/RepDistiller ``models/resnetv2.py`` and megvii-research/mdistiller
``mdistiller/models/cifar/resnetv2.py``: a 3x3 stride-1 conv-BN-ReLU stem with
64 channels (no max-pool), four stages ``layer1..4`` (64, 128, 256, 512 planes,
strides 1, 2, 2, 2) of post-activation basic blocks (ResNet18/34) or
bottlenecks with expansion 4 (ResNet50), 1x1-conv-BN ``shortcut`` where the
shape changes, global average pooling and ``linear``.  Names, shapes,
construction order and initialisation follow the reference.

Stage features (mdistiller ``feats["feats"]``): stem output, layer1..4 outputs;
pre-activations: stem output (already activated), then each stage's last
residual sum before its ReLU.
"""

from __future__ import annotations

from typing import Sequence, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from ._base import CifarNet, build_model, init_kaiming_fan_out, register, run_stages, stage_info, zoo_cfg

__all__ = ["BasicBlock", "Bottleneck", "CifarResNetV2", "ResNet18", "ResNet34", "ResNet50"]


def _shortcut(in_chs: int, out_chs: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_chs == out_chs:
        return nn.Sequential()  # identity, no parameters (as in the reference)
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_chs),
    )


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_chs, planes * self.expansion, stride)

    def forward_with_preact(self, x: torch.Tensor):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        pre = self.bn2(self.conv2(out)) + self.shortcut(x)
        return F.relu(pre), pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class Bottleneck(nn.Module):
    """1x1-BN-ReLU, 3x3(stride)-BN-ReLU, 1x1(x4)-BN + shortcut, then ReLU."""

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_chs, planes * self.expansion, stride)

    def forward_with_preact(self, x: torch.Tensor):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        pre = self.bn3(self.conv3(out)) + self.shortcut(x)
        return F.relu(pre), pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class CifarResNetV2(CifarNet):
    """Four-stage ResNet with a CIFAR stem."""

    _head_attr = "linear"
    _stage_modules = (("conv1", "bn1", "act1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))

    def __init__(
        self,
        block: Block = BasicBlock,
        num_blocks: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 100,
        zero_init_residual: bool = False,
        in_chans: int = 3,
        global_pool: str = "avg",
    ):
        super().__init__()
        planes = (64, 128, 256, 512)
        self.num_classes = int(num_classes)
        self.num_features = planes[3] * block.expansion

        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        in_chs = 64
        for s in range(4):
            blocks = []
            for i in range(num_blocks[s]):
                blocks.append(block(in_chs, planes[s], (1 if s == 0 else 2) if i == 0 else 1))
                in_chs = planes[s] * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self._init_pool(global_pool)
        self.linear = self._make_classifier(self.num_classes)

        self.feature_info = stage_info(
            [64] + [p * block.expansion for p in planes],
            [1, 1, 2, 4, 8],
            ["act1", "layer1", "layer2", "layer3", "layer4"],
        )

        init_kaiming_fan_out(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BN ending the residual branch of each stage's last block (``bn2`` of basic blocks, ``bn3`` of
        bottlenecks), one per pre-activation map after the stem (mdistiller ``get_bn_before_relu``)."""
        stages = (self.layer1, self.layer2, self.layer3, self.layer4)
        return [s[-1].bn3 if isinstance(s[-1], Bottleneck) else s[-1].bn2 for s in stages]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def _forward_impl(self, x: torch.Tensor, want_preact: bool):
        return run_stages(self.act1(self.bn1(self.conv1(x))), (self.layer1, self.layer2, self.layer3, self.layer4))


def ResNet18(num_classes: int = 100, **kwargs) -> CifarResNetV2:
    return CifarResNetV2(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, **kwargs)


def ResNet34(num_classes: int = 100, **kwargs) -> CifarResNetV2:
    return CifarResNetV2(BasicBlock, (3, 4, 6, 3), num_classes=num_classes, **kwargs)


def ResNet50(num_classes: int = 100, **kwargs) -> CifarResNetV2:
    return CifarResNetV2(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, **kwargs)


_CFG = zoo_cfg(pool_size=(4, 4), first_conv="conv1", classifier="linear")


@register(_CFG)
def cifar_resnet18(pretrained=False, **kwargs):
    """CIFAR ResNet-18 (basic blocks 2-2-2-2, 64-512 planes)."""
    return build_model("cifar_resnet18", ResNet18, pretrained, kwargs, feature_levels=5)


@register(_CFG)
def cifar_resnet34(pretrained=False, **kwargs):
    """CIFAR ResNet-34 (basic blocks 3-4-6-3, 64-512 planes)."""
    return build_model("cifar_resnet34", ResNet34, pretrained, kwargs, feature_levels=5)


@register(_CFG)
def cifar_resnet50(pretrained=False, **kwargs):
    """CIFAR ResNet-50 (bottlenecks 3-4-6-3, 2048-d embedding)."""
    return build_model("cifar_resnet50", ResNet50, pretrained, kwargs, feature_levels=5)
