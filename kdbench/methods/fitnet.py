"""FitNet: Romero et al. ICLR 2015, hint learning through a convolutional regressor.

loss = ce_weight * CE(s, y) + feat_weight * MSE(r(f^S_h), f^T_h), with f_h the stage map ``stages[hint_layer]``
(mdistiller ``feats[HINT_LAYER]``) and ``r`` a :class:`ConvRegressor` sized from the probe shapes, trained with
the student. Defaults: mdistiller configs/cifar100/fitnet.yaml with mdistiller/engine/cfg.py (hint layer 2,
CE 1, feature 100), as RepDistiller's ``--distill hint`` recipe; the regressor is trained jointly from the
first step in both (no separate hint stage).
The loss itself runs in float32 under bf16/fp16 autocast (``_connectors.in_float32``), as the float32
references compute it; the regressor runs in the training precision like the student.
"""

import torch.nn.functional as F

from ..errors import ConfigError
from ..losses import fitnet_loss
from ._connectors import ConvRegressor, in_float32
from .base import Method, register_method


@register_method("fitnet")
class FitNet(Method):
    needs = frozenset({"logits", "stages"})

    ranges = {"hint_layer": "any"}  # an index into the stage list (negative from the end), checked in build

    def __init__(self, hint_layer: int = 2, ce_weight: float = 1.0, feat_weight: float = 100.0):
        super().__init__()
        self.hint_layer, self.ce_weight, self.feat_weight = hint_layer, ce_weight, feat_weight

    def build(self, student, teacher, context):
        depth = min(len(student.stages), len(teacher.stages))
        if not -depth <= self.hint_layer < depth:
            raise ConfigError(f"method.hint_layer: {self.hint_layer} is out of range for stage lists of "
                              f"{len(student.stages)} (student) and {len(teacher.stages)} (teacher) maps")
        self.regressor = ConvRegressor(student.stages[self.hint_layer].shape, teacher.stages[self.hint_layer].shape)

    def forward(self, student, teacher, batch, progress):
        hint = self.regressor(student.stages[self.hint_layer])
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
            "fitnet": self.feat_weight * in_float32(fitnet_loss, hint, teacher.stages[self.hint_layer]),
        }
