"""CIFAR ShuffleNetV1 (canonical name "ShuffleV1").

Architecture of ``ShuffleV1`` in HobbitLong/RepDistiller ``models/ShuffleNetv1.py``
(identical in megvii-research/mdistiller ``mdistiller/models/cifar/ShuffleNetv1.py``):
a 1x1 conv-BN-ReLU stem to 24 channels (no stride, no max-pool), three stages
``layer1..3`` of 4, 8, 4 bottlenecks (groups g=3, stage widths 240, 480, 960),
each bottleneck being grouped 1x1 conv-BN-ReLU, channel shuffle, depthwise 3x3
conv-BN, grouped 1x1 conv-BN, then ReLU of (branch + input) or, for the first,
stride-2 block of a stage, of concat(branch, 3x3 avg-pooled input).  The very
first 1x1 conv of the network (on the 24-channel stem) is not grouped.  A
linear ``linear`` on the globally averaged last stage.  Names, shapes and
construction order follow the reference (which keeps PyTorch's default init).

Stage features (mdistiller ``feats["feats"]``): stem output, layer1..3 outputs;
pre-activations: stem output, then each stage's last (sum) before its ReLU.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import CifarNet, build_model, register, run_stages, stage_info, zoo_cfg

__all__ = ["channel_shuffle", "ShuffleV1Block", "ShuffleNetV1", "shufflev1"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups: (g, C/g) -> (C/g, g)."""
    if groups == 1:
        return x
    n, c, h, w = x.size()
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Block(nn.Module):
    """ShuffleNetV1 unit; ``out_chs`` is the width of the residual branch."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, first_groups: int | None = None):
        super().__init__()
        self.stride = stride
        mid = out_chs // 4
        g1 = groups if first_groups is None else first_groups
        self.g1 = g1
        self.conv1 = nn.Conv2d(in_chs, mid, kernel_size=1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_chs, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)

    def forward_with_preact(self, x: torch.Tensor):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = channel_shuffle(out, self.g1)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            pre = torch.cat([out, F.avg_pool2d(x, kernel_size=3, stride=2, padding=1)], 1)
        else:
            pre = out + x
        return F.relu(pre), pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class ShuffleNetV1(CifarNet):
    """ShuffleNetV1 for 32x32 inputs."""

    _head_attr = "linear"
    _stage_modules = (("conv1", "bn1", "act1"), ("layer1",), ("layer2",), ("layer3",))

    def __init__(
        self,
        num_classes: int = 100,
        out_planes: Sequence[int] = (240, 480, 960),
        num_blocks: Sequence[int] = (4, 8, 4),
        groups: int = 3,
        stem_chs: int = 24,
        in_chans: int = 3,
        global_pool: str = "avg",
    ):
        super().__init__()
        self.num_classes = int(num_classes)
        self.num_features = int(out_planes[2])

        self.conv1 = nn.Conv2d(in_chans, stem_chs, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)
        in_chs = stem_chs
        for s in range(3):
            blocks = []
            for i in range(num_blocks[s]):
                stride = 2 if i == 0 else 1
                branch = out_planes[s] - in_chs if i == 0 else out_planes[s]  # stride-2 units concat the input
                first = 1 if (s == 0 and i == 0) else None  # no grouping on the narrow stem output
                blocks.append(ShuffleV1Block(in_chs, branch, stride, groups, first_groups=first))
                in_chs = out_planes[s]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self._init_pool(global_pool)
        self.linear = self._make_classifier(self.num_classes)

        self.feature_info = stage_info(
            [stem_chs, *out_planes], [1, 2, 4, 8], ["act1", "layer1", "layer2", "layer3"]
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        return self.layer3(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def _forward_impl(self, x: torch.Tensor, want_preact: bool):
        return run_stages(self.act1(self.bn1(self.conv1(x))), (self.layer1, self.layer2, self.layer3))


def shufflev1(num_classes: int = 100, **kwargs) -> ShuffleNetV1:
    return ShuffleNetV1(num_classes=num_classes, **kwargs)


ShuffleV1 = shufflev1


@register(zoo_cfg(pool_size=(4, 4), first_conv="conv1", classifier="linear"))
def cifar_shufflev1(pretrained=False, **kwargs):
    """CIFAR ShuffleNetV1 (g=3, widths 240-480-960)."""
    return build_model("cifar_shufflev1", shufflev1, pretrained, kwargs, feature_levels=4)
