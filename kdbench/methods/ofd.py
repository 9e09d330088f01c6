"""OFD: Heo et al. ICCV 2019, "A Comprehensive Overhaul of Feature Distillation".

loss = ce_weight * CE(s, y) + ofd_weight * OFD(connector_i(s_i), t_i; margin_i), over the pre-activation stage
maps after the stem (mdistiller ``preact_feats[1:]``). When the pair has different numbers of stages the last
``min`` stages of each are used (mdistiller ``_align_list``). Each student map goes through a connector,
conv (``connector_kernel_size``, no bias, N(0, sqrt(2 / (k*k*C_t))) init) + BN (1, 0) to the teacher's width;
the teacher map is average-pooled to the student map's size. The margins come from the teacher BN that
produces each pre-activation map (the zoo models' ``bn_before_relu()``, mdistiller ``get_bn_before_relu``), see
:func:`kdbench.losses.ofd.ofd_margin`; they are computed once at build time and kept as buffers.

Defaults: mdistiller configs/cifar100/ofd.yaml with CFG.OFD (CE 1, feature weight 1e-3, kernel size 1), which
is the original code's ``loss.sum() / batch / 1000``.

Deviations from the references:
- The margins of stage ``i`` are those of the teacher stage its map comes from. mdistiller indexes the full
  margin list with the aligned stage index, which only works when the teacher has no more stages than the
  student; there both agree.
- mdistiller's ``OFD.train`` and the original ``train_with_distill`` leave the teacher in training mode, so its
  pre-activation maps are normalised with the statistics of the current batch; the margins assume exactly those
  maps (mean = BN bias, std = |BN weight|). Here too the teacher's BN layers use batch statistics
  (``teacher_batch_stats``), but its running statistics stay untouched, where the references let them drift
  (they are not used there either).
"""

import math

import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..losses import ofd_loss
from ..losses.ofd import ofd_margin
from .base import Method, register_method


def _connector(c_in: int, c_out: int, kernel_size: int) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (kernel_size * kernel_size * c_out)))
    return nn.Sequential(conv, nn.BatchNorm2d(c_out))  # BN starts at weight 1, bias 0


@register_method("ofd")
class OFD(Method):
    needs = frozenset({"logits", "preact"})
    teacher_batch_stats = True  # the references leave the teacher in train mode (BN on batch statistics)

    ranges = {"connector_kernel_size": ">= 1"}

    def __init__(self, ce_weight: float = 1.0, ofd_weight: float = 1e-3, connector_kernel_size: int = 1):
        super().__init__()
        self.ce_weight, self.ofd_weight, self.connector_kernel_size = ce_weight, ofd_weight, connector_kernel_size

    def build(self, student, teacher, context):
        model = context.teacher
        name = getattr(model, "kdbench_name", type(model).__name__)
        if not hasattr(model, "bn_before_relu"):
            raise ConfigError(f"method=ofd cannot use teacher {name}: it has no bn_before_relu() giving the BN layer "
                              "before each pre-activation stage map, from which OFD takes its margins (CIFAR zoo "
                              "ResNets, WRNs, VGGs and MobileNetV2 have it; ShuffleNets do not, as in mdistiller)")
        bns, t_maps, s_maps = list(model.bn_before_relu()), teacher.preact[1:], student.preact[1:]
        if [bn.num_features for bn in bns] != [t.shape[1] for t in t_maps]:
            raise ConfigError(f"method=ofd: teacher {name}'s bn_before_relu() does not match its pre-activation maps")
        n = min(len(s_maps), len(t_maps))
        self.connectors = nn.ModuleList(
            _connector(s.shape[1], t.shape[1], self.connector_kernel_size) for s, t in zip(s_maps[-n:], t_maps[-n:]))
        for i, bn in enumerate(bns[-n:]):
            self.register_buffer(f"margin{i}", ofd_margin(bn.weight, bn.bias))

    def forward(self, student, teacher, batch, progress):
        n = len(self.connectors)
        s_maps = [c(f) for c, f in zip(self.connectors, student.preact[1:][-n:])]
        margins = [getattr(self, f"margin{i}") for i in range(n)]
        ofd = ofd_loss(s_maps, teacher.preact[1:][-n:], margins)
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets), "ofd": self.ofd_weight * ofd}
