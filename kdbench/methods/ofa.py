"""OFA-KD: Hao et al. NeurIPS 2023, one-for-all distillation through stage branches that predict classes.

Branches are attached to chosen student stages; each maps its stage map to class logits and is trained with
the OFA loss (``kdbench.losses.ofa_loss``) against the teacher's logits, as is the student's own output:

    loss = ce_weight * CE_ls(s, y) + kd_weight * OFA(s, t) + ofa_weight * sum_k OFA(branch_k(stage_k), t)

A branch (Hao840/OFAKD ``distillers/ofa.py``, CNN-student design): as many separable-conv blocks (depthwise 3x3
stride 2 + pointwise, BN, ReLU, depthwise 3x3 + pointwise, BN, ReLU) as halvings bring the stage to the last
stage's resolution, doubling the channels each block and ending at ``max(student, teacher) embedding width``
(a 1x1 convolution when no halving is needed), then global average pooling and a linear classifier. The
reference counts halvings as ``4 - stage`` for four-stage networks; here they are counted from the probe's
stage shapes, which gives the same branches for ImageNet ResNets and sizes any CNN. Weights are initialised as
the reference (Kaiming-normal fan-out convolutions, unit BN, truncated-normal std 0.02 linear, zero biases).
The reference's transformer branches (for ViT/MLP students) are not implemented: every student, ViT included,
gets the CNN branch on its ``stages`` maps.

``branch_stages``: ``"all"`` (every stage after the stem, i.e. the reference's default 1,2,3,4 on a ResNet) or
comma-separated stage numbers counting the stem (``stages[0]``) as 0. Only the teacher's logits enter the loss
(its embedding width only sizes the branches).

Defaults: the CIFAR-100 recipe of Hao840/OFAKD: README ``--ofa-eps 1.0``; ``train.py`` defaults
``--gt-loss-weight 1 --kd-loss-weight 1 --ofa-loss-weight 1 --ofa-temperature 1 --ofa-stage 1 2 3 4``; and
``configs/cifar/cnn.yaml`` ``smoothing: 0.1`` (label-smoothed CE). The ImageNet example uses eps 1.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..losses import ofa_loss
from .base import Method, register_method


def _sep_conv(channels_in: int, channels_out: int) -> nn.Sequential:
    """Depthwise-separable block that halves the resolution (the reference's ``SepConv``)."""
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_in, 3, stride=2, padding=1, groups=channels_in, bias=False),
        nn.Conv2d(channels_in, channels_in, 1, bias=False),
        nn.BatchNorm2d(channels_in),
        nn.ReLU(),
        nn.Conv2d(channels_in, channels_in, 3, stride=1, padding=1, groups=channels_in, bias=False),
        nn.Conv2d(channels_in, channels_out, 1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
    )


def _halvings(size: tuple[int, int], last: tuple[int, int]) -> int:
    """How many stride-2 (kernel 3, padding 1) convolutions bring ``size`` down to ``last``."""
    n = 0
    while size[0] > last[0] or size[1] > last[1]:
        size = ((size[0] + 1) // 2, (size[1] + 1) // 2)
        n += 1
    return n


def _branch(stage: torch.Tensor, last: torch.Tensor, width: int, num_classes: int) -> nn.Sequential:
    channels = stage.shape[1]
    n = _halvings(tuple(stage.shape[-2:]), tuple(last.shape[-2:]))
    if n == 0:
        blocks = [nn.Conv2d(channels, width, 1)]
    else:
        blocks = [_sep_conv(channels * 2**i, width if i == n - 1 else channels * 2 ** (i + 1)) for i in range(n)]
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


@register_method("ofa")
class OFA(Method):
    needs = frozenset({"logits", "stages", "embedding"})
    image_logits_from_stages = True  # branch classifiers on the student's stages
    teacher_needs = frozenset({"logits"})

    def __init__(self, ce_weight: float = 1.0, kd_weight: float = 1.0, ofa_weight: float = 1.0, eps: float = 1.0,
                 temperature: float = 1.0, label_smoothing: float = 0.1, branch_stages: str = "all"):
        super().__init__()
        self.ce_weight, self.kd_weight, self.ofa_weight = ce_weight, kd_weight, ofa_weight
        self.eps, self.temperature, self.label_smoothing = eps, temperature, label_smoothing
        self.branch_stages = branch_stages
        self.branches = nn.ModuleDict()

    def _stage_indices(self, num_stages: int) -> list[int]:
        if str(self.branch_stages).strip().lower() == "all":
            return list(range(1, num_stages))
        try:
            chosen = [int(part) for part in str(self.branch_stages).split(",") if part.strip()]
        except ValueError:
            chosen = []
        if not chosen or any(not 0 <= i < num_stages for i in chosen):
            raise ConfigError(f"method.branch_stages: expected 'all' or comma-separated stage numbers in "
                              f"0..{num_stages - 1} (0 is the stem), got {self.branch_stages!r}")
        return chosen

    def build(self, student, teacher, context):
        if not student.stages:
            raise ConfigError("method=ofa: the student gives no stage maps")
        teacher_width = teacher.embedding.shape[1] if teacher.embedding is not None else context.teacher.num_features
        width = max(student.embedding.shape[1], teacher_width)
        last = student.stages[-1]
        for i in self._stage_indices(len(student.stages)):
            if student.stages[i].dim() != 4:
                raise ConfigError(f"method=ofa: student stage {i} is not a (B, C, H, W) map")
            self.branches[str(i)] = _branch(student.stages[i], last, width, context.num_classes)
        self.branches.apply(_init)

    def forward(self, student, teacher, batch, progress):
        y = batch.targets

        def ofa(logits):
            return ofa_loss(logits, teacher.logits, y, eps=self.eps, temperature=self.temperature)

        branch_losses = [ofa(branch(student.stages[int(i)])) for i, branch in self.branches.items()]
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, y, label_smoothing=self.label_smoothing),
            "ofa": self.kd_weight * ofa(student.logits),
            "ofa_branches": self.ofa_weight * sum(branch_losses),
        }
