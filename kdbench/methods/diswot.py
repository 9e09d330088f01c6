"""DisWOT-dagger: Dong, Li & Wei, CVPR 2023 (arXiv 2303.15678), DisWOT's two similarities used as distillation
losses while the student trains (the paper's "similarity metrics in DisWOT as new distillers").

loss = ce_weight * CE(s, y)
     + relation_weight * L_rel(stages_S[-1], stages_T[-1])
     + semantic_weight * L_sem(dCE_S/dW_S, dCE_T/dW_T)

``L_rel`` is the sample-relation distance of the batch Gram matrices of the last stage maps (the references'
``feats[-2]``), ``L_sem`` the distance of the per-class channel Gram matrices of the cross-entropy gradients with
respect to each network's final linear weight, computed in closed form from the logits and the pooled embedding
(:func:`kdbench.losses.diswot.classifier_gradient`), so it trains the student through its logits and embedding
(:mod:`kdbench.losses.diswot`; the search score ``kdbench-search`` uses the same two functions).

Defaults: the reference repository (lliai/DisWOT-CVPR2023 @ dffe4e6) ships the search score only, no training
loss built from it and no weights for one, and the paper's weights could not be retrieved here. kdbench's own
defaults: CE 1; relation 3000, the weight mdistiller gives SP's loss (``CFG.SP.LOSS.FEAT_WEIGHT``), which is the
same function on the same map; semantic 1, the search score's unit weight (the term is normalised by classes and
channels, of order 1).

Importing this module also registers the search's width / depth grid (``kdbench.models.cifar.grid``) in the model
registry, so a student found by ``kdbench-search`` trains by name (``student.name=cifar_resnet26_w32``).
"""

import torch.nn.functional as F

from ..losses.diswot import classifier_gradient, diswot_relation_loss, diswot_semantic_loss
from ._connectors import in_float32
from .base import Method, register_method


def _semantic(s_logits, s_embedding, t_logits, t_embedding, targets):
    return diswot_semantic_loss(classifier_gradient(s_logits, s_embedding, targets),
                                classifier_gradient(t_logits, t_embedding, targets))


@register_method("diswot")
class DisWOT(Method):
    needs = frozenset({"logits", "embedding", "stages"})

    def __init__(self, ce_weight: float = 1.0, relation_weight: float = 3000.0, semantic_weight: float = 1.0):
        super().__init__()
        self.ce_weight, self.relation_weight, self.semantic_weight = ce_weight, relation_weight, semantic_weight

    def forward(self, student, teacher, batch, progress):
        targets = batch.targets
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, targets),
            "relation": self.relation_weight * in_float32(diswot_relation_loss, student.stages[-1],
                                                          teacher.stages[-1].detach()),
            "semantic": self.semantic_weight * in_float32(_semantic, student.logits, student.embedding,
                                                          teacher.logits.detach(), teacher.embedding.detach(), targets),
        }
