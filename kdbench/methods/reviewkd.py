"""ReviewKD: Chen et al. CVPR 2021, knowledge review with attention-based fusion (ABF) and HCL.

Targets are the teacher's pre-activation stage maps after the stem, ``preact[1:]``, plus its pooled embedding
as a ``1 x 1`` map: ``L`` levels. The student gives its last ``L - 1`` post-activation stage maps plus its
pooled embedding (the references reverse the student's ``feats + [pooled]`` list and let ``zip`` drop what
has no fusion block, so the stem and any surplus early stages go unused). From the deepest level down, an ABF
block projects the student map to ``min(max_mid_channel, C_pooled)`` channels (1x1 conv + BN), fuses it with
the previous level's result (nearest-upsampled to this student map's size) through a 2-channel sigmoid
attention, resizes it (nearest) to the teacher map's size and maps it to the teacher's channels (3x3 conv +
BN). The loss is :func:`kdbench.losses.hcl_loss`, weighted ``reviewkd_weight * min(epoch / warmup_epochs, 1)``
(1-based epochs, as mdistiller).

Follows mdistiller ``distillers/ReviewKD.py`` (CIFAR: student ``feats``, ``STU_PREACT`` False) and
dvlab-research/ReviewKD ``CIFAR-100/model/reviewkd.py``. Channels and spatial sizes (the references'
per-model ``IN_CHANNELS``/``OUT_CHANNELS``/``SHAPES``/``OUT_SHAPES`` tables) come from the actual outputs.
Defaults: mdistiller ``configs/cifar100/reviewkd.yaml`` and ``engine/cfg.py`` (CE 1, weight 5, warm-up 20);
dvlab's ``script/reviewKD.sh`` uses other weights for some pairs (ShuffleV2 8, resnet56/20 0.6,
resnet110/32 1.0), set through ``pair_overrides.reviewkd.reviewkd_weight``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import hcl_loss
from .base import Method, register_method


class ABF(nn.Module):
    """Attention-based fusion block of one level; ``fuse`` is False for the deepest level (nothing above)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, above=None, out_size=None):
        """Returns (output mapped to the teacher's channels, fused map passed to the next level down)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            above = F.interpolate(above, x.shape[-2:], mode="nearest")
            att = self.att_conv(torch.cat([x, above], dim=1))
            x = x * att[:, 0:1] + above * att[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, tuple(out_size), mode="nearest")
        return self.conv2(x), x


def _as_map(embedding: torch.Tensor) -> torch.Tensor:
    return embedding.flatten(1)[:, :, None, None]


@register_method("reviewkd")
class ReviewKD(Method):
    needs = frozenset({"logits", "embedding", "stages"})
    teacher_needs = frozenset({"logits", "embedding", "preact"})

    def __init__(self, ce_weight: float = 1.0, reviewkd_weight: float = 5.0, warmup_epochs: int = 20,
                 max_mid_channel: int = 512):
        super().__init__()
        self.ce_weight, self.reviewkd_weight, self.warmup_epochs = ce_weight, reviewkd_weight, warmup_epochs
        self.max_mid_channel = max_mid_channel

    @staticmethod
    def teacher_feats(teacher) -> list[torch.Tensor]:
        return list(teacher.preact[1:]) + [_as_map(teacher.embedding)]

    @staticmethod
    def student_feats(student, levels: int) -> list[torch.Tensor]:
        stages = list(student.stages)
        if len(stages) < levels - 1:
            raise ValueError(f"reviewkd: the teacher gives {levels} target levels, so the student needs at least "
                             f"{levels - 1} stage maps; it has {len(stages)}")
        return stages[len(stages) - (levels - 1):] + [_as_map(student.embedding)]

    def build(self, student, teacher, context):
        targets = self.teacher_feats(teacher)
        inputs = self.student_feats(student, len(targets))
        mid = min(self.max_mid_channel, inputs[-1].shape[1])
        last = len(inputs) - 1
        self.abfs = nn.ModuleList(ABF(s.shape[1], mid, t.shape[1], fuse=i < last)
                                  for i, (s, t) in enumerate(zip(inputs, targets)))

    def forward(self, student, teacher, batch, progress):
        targets = self.teacher_feats(teacher)
        inputs = self.student_feats(student, len(targets))
        results: list[torch.Tensor] = [None] * len(targets)
        above = None
        for i in reversed(range(len(targets))):
            results[i], above = self.abfs[i](inputs[i], above, targets[i].shape[-2:])
        ramp = min(progress.epoch / self.warmup_epochs, 1.0) if self.warmup_epochs > 0 else 1.0
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
                "reviewkd": self.reviewkd_weight * ramp * hcl_loss(results, targets)}
