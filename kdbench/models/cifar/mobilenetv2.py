"""CIFAR MobileNetV2 (the CRD ``mobile_half`` student, canonical name "MobileNetV2").

Architecture of ``mobile_half`` = ``MobileNetV2(T=6, width_mult=0.5)`` from
HobbitLong/RepDistiller ``models/mobilenetv2.py`` (identical in
megvii-research/mdistiller ``mdistiller/models/cifar/mobilenetv2.py``): a
stride-2 3x3 conv-BN-ReLU stem ``conv1``, seven groups ``blocks[0..6]`` of
inverted residuals with (t, c, n, s) = (1,16,1,1), (T,24,2,1), (T,32,3,2),
(T,64,4,2), (T,96,3,1), (T,160,3,2), (T,320,1,1) and widths scaled by
``width_mult`` (every block keeps its 1x1 expansion conv, even for t=1), a 1x1
conv-BN-ReLU ``conv2`` to 1280 channels, average pooling and
``classifier = Sequential(Linear)``.  Names, shapes, construction order and
initialisation follow the reference.

Stage features (mdistiller ``feats["feats"]``): stem output, blocks[1],
blocks[2], blocks[4], blocks[6] outputs; the 1280-channel ``conv2`` map (the
one that is pooled) is not among them.  The references define no
``preact_feats`` for this network; since every block ends with a linear
(un-activated) BN, ``return_preact`` returns the same tensors as ``feats``.
"""

from __future__ import annotations


import torch
from torch import nn

from ._base import CifarNet, build_model, init_fan_out_normal, register, stage_info, zoo_cfg

__all__ = ["InvertedResidual", "MobileNetV2", "mobile_half"]


def _conv_bn_relu(in_chs: int, out_chs: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """pw expand (conv-BN-ReLU) -> dw 3x3 (conv-BN-ReLU) -> pw linear (conv-BN), residual if shapes match."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        mid = in_chs * expand_ratio
        self.stride = stride
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.conv = nn.Sequential(
            nn.Conv2d(in_chs, mid, 1, 1, 0, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_chs, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# (expansion, channels, repeats, first stride); expansion None = the model's T
_SETTING = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
            (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))
_FEAT_GROUPS = (1, 2, 4, 6)  # groups whose outputs are stage features (after the stem)


class MobileNetV2(CifarNet):
    """MobileNetV2 for 32x32 inputs with expansion ``expand_ratio`` (T) and ``width_mult``."""

    _head_attr = "classifier"
    # the stem, then the groups up to each feature group (1, 2, 4, 6)
    _stage_modules = (("conv1",), ("blocks.0", "blocks.1"), ("blocks.2",), ("blocks.3", "blocks.4"),
                      ("blocks.5", "blocks.6"))
    _final_modules = ("conv2",)

    def __init__(self, num_classes: int = 100, expand_ratio: int = 6, width_mult: float = 0.5, in_chans: int = 3,
                 global_pool: str = "avg"):
        super().__init__()
        self.num_classes = int(num_classes)
        self.expand_ratio = expand_ratio
        self.width_mult = width_mult

        in_chs = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_chans, in_chs, 3, 2)
        self.blocks = nn.ModuleList()
        chs, reds, red = [in_chs], [2], 2
        for i, (t, c, n, s) in enumerate(_SETTING):
            out_chs = int(c * width_mult)
            group = []
            for j in range(n):
                group.append(InvertedResidual(in_chs, out_chs, s if j == 0 else 1, expand_ratio if t is None else t))
                in_chs = out_chs
            self.blocks.append(nn.Sequential(*group))
            red *= s
            if i in _FEAT_GROUPS:
                chs.append(out_chs)
                reds.append(red)
        self.num_features = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_chs, self.num_features, 1, 1)
        self._init_pool(global_pool)
        self.classifier = nn.Sequential(self._make_classifier(self.num_classes))

        self.feature_info = stage_info(chs, reds, ["conv1"] + [f"blocks.{i}" for i in _FEAT_GROUPS])

        init_fan_out_normal(self)

    def get_classifier(self) -> nn.Module:
        return self.classifier[0]

    def _set_classifier(self, head: nn.Module) -> None:
        self.classifier[0] = head

    def bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The linear BN closing the last inverted residual of each feature group (blocks 1, 2, 4, 6), one per
        pre-activation map after the stem (mdistiller ``get_bn_before_relu``)."""
        return [self.blocks[i][-1].conv[-1] for i in _FEAT_GROUPS]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self.conv2(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)

    def _forward_impl(self, x: torch.Tensor, want_preact: bool):
        x = self.conv1(x)
        feats = [x]
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in _FEAT_GROUPS:
                feats.append(x)
        final = self.conv2(x)
        return final, feats, list(feats)


def mobile_half(num_classes: int = 100, **kwargs) -> MobileNetV2:
    """The CRD "MobileNetV2" student: T=6, width 0.5."""
    return MobileNetV2(num_classes=num_classes, expand_ratio=6, width_mult=0.5, **kwargs)


@register(zoo_cfg(pool_size=(2, 2), first_conv="conv1.0", classifier="classifier.0"))
def cifar_mobilenetv2(pretrained=False, **kwargs):
    """CIFAR MobileNetV2 (T=6, width 0.5; CRD ``mobile_half``)."""
    return build_model("cifar_mobilenetv2", mobile_half, pretrained, kwargs, feature_levels=5)
