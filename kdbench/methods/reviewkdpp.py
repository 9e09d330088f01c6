"""ReviewKD++: ReviewKD plus the ND term (Wang et al. ICCV 2023, WangYZ1608/Knowledge-Distillation-via-ND).

loss = ce_weight * CE + min((epoch - 1) / warmup_epochs, 1) * reviewkd_weight * HCL(ABF(student), teacher)
       + nd_weight * ND.
The ReviewKD part (ABF blocks, levels, HCL) is reviewkd.py's, which CIFAR/ReviewKD++/models/reviewkd.py and
train_reviewkd.py (@ fc6f3f9) match: student stage maps after the stem plus the pooled map, teacher
pre-activation maps after the stem plus the pooled map, ABF middle width min(512, last student width). The ND
term (class means, the embedding projection ``fc1`` where the widths differ) is nd.py's. The warm-up is the
reference's min(1, epoch / warm_up) with its 0-based epochs, so the ReviewKD term is zero in the first epoch
(``reviewkd`` counts epochs from 1, as mdistiller); the ND term is not warmed up.
Defaults: CIFAR/ReviewKD++/train_reviewkd.sh, resnet32x4 -> resnet8x4 (1.0*cls + 8.0*kd + 1.0*nd), and
train_reviewkd.py (``--warm_up 20``).
Deviation: train_reviewkd.py loads the class means from a hard-coded file (resnet56's; its comment names one
file per teacher); here they are always the actual teacher's, computed as nd.py does.
"""

from dataclasses import replace

from .base import register_method
from .nd import ND
from .reviewkd import ReviewKD


@register_method("reviewkdpp")
class ReviewKDPP(ReviewKD, ND):
    """ReviewKD's needs (they include the embedding the ND term uses), ABF blocks and terms, plus ND's term."""

    def __init__(self, ce_weight: float = 1.0, reviewkd_weight: float = 8.0, nd_weight: float = 1.0,
                 warmup_epochs: int = 20, max_mid_channel: int = 512):
        # ReviewKD.__init__ initialises ND (next in the MRO) with its defaults; nd_weight is set after it.
        super().__init__(ce_weight=ce_weight, reviewkd_weight=reviewkd_weight, warmup_epochs=warmup_epochs,
                         max_mid_channel=max_mid_channel)
        self.nd_weight = nd_weight

    def build(self, student, teacher, context):
        # ABF blocks first, then the projector, in the order the reference creates its parameters.
        ReviewKD.build(self, student, teacher, context)
        ND.build(self, student, teacher, context)

    def forward(self, student, teacher, batch, progress):
        # ReviewKD ramps over 1-based epochs; handing it the 0-based epoch gives the reference's ramp.
        terms = ReviewKD.forward(self, student, teacher, batch, replace(progress, epoch=progress.epoch - 1))
        return {**terms, "nd": self.nd_term(student, teacher, batch)}
