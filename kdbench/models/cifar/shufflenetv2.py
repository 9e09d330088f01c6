"""CIFAR ShuffleNetV2 1.0x (canonical name "ShuffleV2").

Architecture of ``ShuffleV2`` (``ShuffleNetV2(net_size=1)``) in
HobbitLong/RepDistiller ``models/ShuffleNetv2.py`` (identical in
megvii-research/mdistiller ``mdistiller/models/cifar/ShuffleNetv2.py``): a 1x1
conv-BN-ReLU stem to 24 channels (no stride, no max-pool), three stages
``layer1..3`` (widths 116, 232, 464) each made of one stride-2 down-sampling
unit followed by 3, 7, 3 basic units (channel split in halves, 1x1 conv-BN-ReLU
-> depthwise 3x3 conv-BN -> 1x1 conv-BN-ReLU on one half, concat, shuffle with
2 groups), a 1x1 conv-BN-ReLU ``conv2``/``bn2`` to 1024 channels, global average
pooling and ``linear``.  Names, shapes and construction order follow the
reference (which keeps PyTorch's default init).

Stage features (mdistiller ``feats["feats"]``): stem output, layer1..3 outputs.
Pre-activations follow the reference exactly: for each stage's last unit it is
``concat(untouched half, branch before its final ReLU)`` taken *before* the
channel shuffle, so its channel order differs from the stage output's.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import CifarNet, build_model, register, stage_info, zoo_cfg
from .shufflenetv1 import channel_shuffle

__all__ = ["ShuffleV2DownBlock", "ShuffleV2Block", "ShuffleNetV2", "shufflev2"]


class ShuffleV2Block(nn.Module):
    """Basic (stride-1) ShuffleNetV2 unit on ``chs`` channels, split ratio 1/2."""

    def __init__(self, chs: int, split_ratio: float = 0.5):
        super().__init__()
        self.split_ratio = split_ratio
        half = int(chs * split_ratio)
        self.split_chs = half  # the reference's int(x.size(1) * ratio), fixed here so that fx can trace it
        self.conv1 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, stride=1, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def _branch(self, x: torch.Tensor):
        c = self.split_chs
        keep, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)), inplace=True)
        out = self.bn2(self.conv2(out))
        return keep, self.bn3(self.conv3(out))

    def forward_with_preact(self, x: torch.Tensor):
        keep, pre = self._branch(x)
        out = channel_shuffle(torch.cat([keep, F.relu(pre)], 1), 2)
        return out, torch.cat([keep, pre], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, pre = self._branch(x)
        return channel_shuffle(torch.cat([keep, F.relu(pre, inplace=True)], 1), 2)


class ShuffleV2DownBlock(nn.Module):
    """Stride-2 ShuffleNetV2 unit: two branches on the full input, concat, shuffle."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        mid = out_chs // 2
        # left branch
        self.conv1 = nn.Conv2d(in_chs, in_chs, kernel_size=3, stride=2, padding=1, groups=in_chs, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv2 = nn.Conv2d(in_chs, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch
        self.conv3 = nn.Conv2d(in_chs, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)), inplace=True)
        right = F.relu(self.bn3(self.conv3(x)), inplace=True)
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)), inplace=True)
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(CifarNet):
    """ShuffleNetV2 for 32x32 inputs; ``stage_chs`` = (stage1, stage2, stage3, last conv)."""

    _head_attr = "linear"
    _stage_modules = (("conv1", "bn1", "act1"), ("layer1",), ("layer2",), ("layer3",))
    _final_modules = ("conv2", "bn2", "act2")

    def __init__(
        self,
        num_classes: int = 100,
        stage_chs: Sequence[int] = (116, 232, 464, 1024),
        num_blocks: Sequence[int] = (3, 7, 3),
        stem_chs: int = 24,
        in_chans: int = 3,
        global_pool: str = "avg",
    ):
        super().__init__()
        self.num_classes = int(num_classes)
        self.num_features = int(stage_chs[3])

        self.conv1 = nn.Conv2d(in_chans, stem_chs, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)
        in_chs = stem_chs
        for s in range(3):
            blocks = [ShuffleV2DownBlock(in_chs, stage_chs[s])]
            blocks += [ShuffleV2Block(stage_chs[s]) for _ in range(num_blocks[s])]
            in_chs = stage_chs[s]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.conv2 = nn.Conv2d(stage_chs[2], stage_chs[3], kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(stage_chs[3])
        self.act2 = nn.ReLU(inplace=True)
        self._init_pool(global_pool)
        self.linear = self._make_classifier(self.num_classes)

        self.feature_info = stage_info(
            [stem_chs, *stage_chs[:3]], [1, 2, 4, 8], ["act1", "layer1", "layer2", "layer3"]
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.act2(self.bn2(self.conv2(x)))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def _forward_impl(self, x: torch.Tensor, want_preact: bool):
        x = self.act1(self.bn1(self.conv1(x)))
        feats, preacts = [x], [x]
        for stage in (self.layer1, self.layer2, self.layer3):
            for block in stage[:-1]:
                x = block(x)
            if want_preact:
                x, pre = stage[-1].forward_with_preact(x)
                preacts.append(pre)
            else:
                x = stage[-1](x)
            feats.append(x)
        final = self.act2(self.bn2(self.conv2(x)))
        return final, feats, (preacts if want_preact else None)


def shufflev2(num_classes: int = 100, **kwargs) -> ShuffleNetV2:
    return ShuffleNetV2(num_classes=num_classes, **kwargs)


ShuffleV2 = shufflev2


@register(zoo_cfg(pool_size=(4, 4), first_conv="conv1", classifier="linear"))
def cifar_shufflev2(pretrained=False, **kwargs):
    """CIFAR ShuffleNetV2 1.0x (widths 116-232-464, 1024-d head conv)."""
    return build_model("cifar_shufflev2", shufflev2, pretrained, kwargs, feature_levels=4)
