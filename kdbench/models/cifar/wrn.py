"""CIFAR Wide ResNets (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2).

Architecture of WRN-d-k as used by the CRD benchmark
(HobbitLong/RepDistiller ``models/wrn.py``, identical in megvii-research/mdistiller
``mdistiller/models/cifar/wrn.py``): a plain 3x3 stem conv (16 channels), three
groups ``block1..3`` of ``n = (d - 4) / 6`` pre-activation blocks
(BN-ReLU-conv3x3-BN-ReLU-conv3x3, 1x1 ``convShortcut`` when the width changes)
with widths 16k, 32k, 64k and strides 1, 2, 2, a final BN-ReLU (``bn1``) and the
classifier ``fc``.  Module names (``blockX.layer.i``), shapes, construction
order and initialisation follow the reference.

Stage features (mdistiller ``feats["feats"]``): stem conv output, block1,
block2, block3 outputs (these are pre-activation-net outputs, i.e. not ReLU'd).
Pre-activations (``feats["preact_feats"]``): stem output, then each stage output
passed through the BN that opens the next stage (``block2.layer[0].bn1``,
``block3.layer[0].bn1``) and the final ``bn1``.  Here they are taken from the
one trunk pass instead of re-running those BNs.  mdistiller's ``forward``
re-applies the three BNs on every call, which in train mode updates their running
statistics (and ``num_batches_tracked``) a second time per step; pass
``repeat_preact_bn=True`` to reproduce that for students trained the mdistiller
way (RepDistiller's plain ``forward`` does not do it, nor does the default here).
"""

from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from ._base import CifarNet, build_model, register, stage_info, zoo_cfg

__all__ = ["WideBlock", "WideStage", "WideResNet", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"]


class WideBlock(nn.Module):
    """Pre-activation basic block of a WRN."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        if in_chs == out_chs:
            if stride != 1:
                raise ValueError("an identity shortcut needs stride 1")
            self.convShortcut = None
        else:
            self.convShortcut = nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward_with_preact(self, x: torch.Tensor):
        """Return the block output and ``bn1(x)`` (the BN that opens the block)."""
        pre = self.bn1(x)
        act = F.relu(pre)
        out = F.relu(self.bn2(self.conv1(act)), inplace=True)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class WideStage(nn.Module):
    """A group of WRN blocks, kept under ``.layer`` as in the reference keys."""

    def __init__(self, num_blocks: int, in_chs: int, out_chs: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBlock(in_chs if i == 0 else out_chs, out_chs, stride if i == 0 else 1, drop_rate)
            for i in range(num_blocks)
        ])

    def forward_entry_preact(self, x: torch.Tensor):
        """Stage output plus the first block's ``bn1(x)``."""
        x, pre = self.layer[0].forward_with_preact(x)
        for block in self.layer[1:]:
            x = block(x)
        return x, pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(CifarNet):
    """WRN-depth-widen_factor for 32x32 inputs (``depth = 6n + 4``)."""

    _head_attr = "fc"
    _stage_modules = (("conv1",), ("block1",), ("block2",), ("block3",))
    _final_modules = ("bn1",)

    def __init__(
        self,
        depth: int = 16,
        widen_factor: int = 1,
        num_classes: int = 100,
        drop_rate: float = 0.0,
        repeat_preact_bn: bool = False,
        in_chans: int = 3,
        global_pool: str = "avg",
    ):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, ...), got {depth}")
        n = (depth - 4) // 6
        chs = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth = depth
        self.widen_factor = widen_factor
        self.repeat_preact_bn = bool(repeat_preact_bn)
        self.num_classes = int(num_classes)
        self.num_features = chs[3]

        self.conv1 = nn.Conv2d(in_chans, chs[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = WideStage(n, chs[0], chs[1], 1, drop_rate)
        self.block2 = WideStage(n, chs[1], chs[2], 2, drop_rate)
        self.block3 = WideStage(n, chs[2], chs[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(chs[3])
        self._init_pool(global_pool)
        self.fc = self._make_classifier(self.num_classes)

        self.feature_info = stage_info(chs, [1, 1, 2, 4], ["conv1", "block1", "block2", "block3"])

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BNs that produce the pre-activation maps after the stem: ``block2.layer[0].bn1``,
        ``block3.layer[0].bn1`` and the final ``bn1`` (mdistiller ``get_bn_before_relu``)."""
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def _repeat_bns(self, f1: torch.Tensor, f2: torch.Tensor, f3: torch.Tensor) -> None:
        """mdistiller quirk: a second pass through the pre-activation BNs (outputs unused, running statistics
        updated once more), in train mode with ``repeat_preact_bn``."""
        if self.repeat_preact_bn and self.training:
            with torch.no_grad():
                self.block2.layer[0].bn1(f1)
                self.block3.layer[0].bn1(f2)
                self.bn1(f3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.block1(self.conv1(x))
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        x = F.relu(self.bn1(f3))
        self._repeat_bns(f1, f2, f3)
        return x

    def _forward_final(self, x: torch.Tensor, feats: List[torch.Tensor]) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        self._repeat_bns(feats[1], feats[2], x)
        return out

    def _norm_feature(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(x))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    def _forward_impl(self, x: torch.Tensor, want_preact: bool):
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2, f1_pre = self.block2.forward_entry_preact(f1)
        f3, f2_pre = self.block3.forward_entry_preact(f2)
        f3_pre = self.bn1(f3)
        final = F.relu(f3_pre)
        self._repeat_bns(f1, f2, f3)
        return final, [f0, f1, f2, f3], [f0, f1_pre, f2_pre, f3_pre]


def wrn_16_1(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(16, 1, num_classes=num_classes, **kwargs)


def wrn_16_2(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(16, 2, num_classes=num_classes, **kwargs)


def wrn_40_1(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(40, 1, num_classes=num_classes, **kwargs)


def wrn_40_2(num_classes: int = 100, **kwargs) -> WideResNet:
    return WideResNet(40, 2, num_classes=num_classes, **kwargs)


_CFG = zoo_cfg(pool_size=(8, 8), first_conv="conv1", classifier="fc")


@register(_CFG)
def cifar_wrn_16_1(pretrained=False, **kwargs):
    """WRN-16-1 (widths 16-16-32-64)."""
    return build_model("cifar_wrn_16_1", wrn_16_1, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_wrn_16_2(pretrained=False, **kwargs):
    """WRN-16-2 (widths 16-32-64-128)."""
    return build_model("cifar_wrn_16_2", wrn_16_2, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_wrn_40_1(pretrained=False, **kwargs):
    """WRN-40-1 (widths 16-16-32-64)."""
    return build_model("cifar_wrn_40_1", wrn_40_1, pretrained, kwargs, feature_levels=4)


@register(_CFG)
def cifar_wrn_40_2(pretrained=False, **kwargs):
    """WRN-40-2 (widths 16-32-64-128)."""
    return build_model("cifar_wrn_40_2", wrn_40_2, pretrained, kwargs, feature_levels=4)
