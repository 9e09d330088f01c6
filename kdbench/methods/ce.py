"""CE: the student alone, trained with cross-entropy (the baseline row of every table)."""

import torch.nn.functional as F

from .base import Method, register_method


@register_method("ce")
class CE(Method):
    uses_teacher = False

    def forward(self, student, teacher, batch, progress):
        return {"ce": F.cross_entropy(student.logits, batch.targets)}
