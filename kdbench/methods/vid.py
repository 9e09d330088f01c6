"""VID: Ahn et al. CVPR 2019, "Variational Information Distillation for Knowledge Transfer".

loss = ce_weight * CE(s, y) + vid_weight * sum_i VID(r_i(s_i), t_i; alpha_i) over the stage maps after the stem
(mdistiller ``feats[1:]``, RepDistiller ``feat[1:-1]``). Each regressor ``r_i`` is conv1x1-ReLU-conv1x1-ReLU-
conv1x1 (no biases, C_s -> C_t -> C_t -> C_t); before it, the larger of the two maps is average-pooled to the
smaller one's size. Each per-channel variance parameter ``alpha_i`` starts at softplus^-1(init_pred_var - eps),
i.e. a variance of ``init_pred_var``.

The variance parameters are trained with the student and the regressors, as in HobbitLong/RepDistiller
(``train_student.py`` puts the whole ``VIDLoss`` list, ``log_scale`` included, into the optimiser) and in the
paper. megvii-research/mdistiller (``distillers/VID.py``) keeps them in a plain Python list left out of
``get_learnable_parameters``, so there they stay at their initial value; here they are ``nn.Parameter``s of the
method and so are optimised with the student (same SGD group, weight decay included, as in RepDistiller)
and checkpointed.

When the pair has different numbers of stages, the first ``min`` stages of each are paired, as RepDistiller's
``zip`` does (mdistiller pairs the same stages whenever the student has no more stages than the teacher).
Defaults: mdistiller configs/cifar100/vid.yaml with CFG.VID (CE 1, VID 1, init_pred_var 5, eps 1e-5), the same
as RepDistiller's run script (``-r 1 -a 0 -b 1``).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..losses import vid_loss
from ..losses.vid import vid_log_scale_init
from .base import Method, register_method


def _conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)


def _match_size(f_s: torch.Tensor, f_t: torch.Tensor):
    """Average-pool the spatially larger map to the other one's size (the references compare heights)."""
    s_h, t_h = f_s.shape[2], f_t.shape[2]
    if s_h > t_h:
        f_s = F.adaptive_avg_pool2d(f_s, (t_h, t_h))
    elif s_h < t_h:
        f_t = F.adaptive_avg_pool2d(f_t, (s_h, s_h))
    return f_s, f_t


@register_method("vid")
class VID(Method):
    needs = frozenset({"logits", "stages"})

    ranges = {"init_pred_var": "> 0"}

    def __init__(self, ce_weight: float = 1.0, vid_weight: float = 1.0, init_pred_var: float = 5.0, eps: float = 1e-5):
        super().__init__()
        self.ce_weight, self.vid_weight, self.init_pred_var, self.eps = ce_weight, vid_weight, init_pred_var, eps

    def build(self, student, teacher, context):
        pairs = list(zip(student.stages[1:], teacher.stages[1:]))
        self.regressors = nn.ModuleList(
            nn.Sequential(_conv1x1(s.shape[1], t.shape[1]), nn.ReLU(), _conv1x1(t.shape[1], t.shape[1]), nn.ReLU(),
                          _conv1x1(t.shape[1], t.shape[1]))
            for s, t in pairs)
        start = vid_log_scale_init(self.init_pred_var, self.eps)
        self.log_scales = nn.ParameterList(nn.Parameter(torch.full((t.shape[1],), start)) for _, t in pairs)

    def forward(self, student, teacher, batch, progress):
        vid = 0.0
        for f_s, f_t, regressor, log_scale in zip(student.stages[1:], teacher.stages[1:], self.regressors,
                                                  self.log_scales):
            f_s, f_t = _match_size(f_s, f_t)
            vid = vid + vid_loss(regressor(f_s), f_t, log_scale, eps=self.eps)
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets), "vid": self.vid_weight * vid}
