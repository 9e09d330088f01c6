"""What a method can ask of a model, computed in one forward pass and only as far as asked.

Needs: ``logits``; ``embedding`` (pooled pre-logit features); ``stages`` (post-activation stage maps, the
references' ``feats`` list for zoo models, timm's ``forward_intermediates`` otherwise); ``preact`` (pre-
activation stage maps: zoo models only); ``member_logits`` (a teacher ensemble's logits per member, stacked
(K, B, C); a single model gives K = 1).

A model may compute its outputs itself: one with ``kdbench_outputs(images, needs) -> ModelOutput`` (a teacher
ensemble) is asked through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.nn as nn

FEATURE_NEEDS = frozenset({"embedding", "stages", "preact"})
NEEDS = frozenset({"logits", "member_logits"}) | FEATURE_NEEDS


@dataclass
class ModelOutput:
    logits: torch.Tensor
    embedding: torch.Tensor | None = None
    stages: list[torch.Tensor] | None = None
    preact: list[torch.Tensor] | None = None
    views: dict[str, "ModelOutput"] = field(default_factory=dict)  # outputs on a method's extra views
    paired: dict | None = None  # what a teacher's pass pairs with (a detector's transformed images, proposals)
    member_logits: torch.Tensor | None = None  # (K, B, C): each member's logits (teacher ensembles; K = 1 otherwise)


def supports(model: nn.Module, needs: Iterable[str]) -> str | None:
    """None if ``model`` can provide ``needs``, else the reason it cannot."""
    needs = set(needs)
    if hasattr(model, "kdbench_supports"):
        return model.kdbench_supports(needs)
    if needs & {"embedding", "stages"} and not hasattr(model, "forward_intermediates"):
        return f"{type(model).__name__} has no forward_intermediates(), so it cannot give stage features"
    if "preact" in needs and not str(getattr(model, "kdbench_name", "")).startswith("cifar_"):
        return f"{getattr(model, 'kdbench_name', type(model).__name__)} gives no pre-activation stage maps (CIFAR zoo models do)"
    return None


def run_model(model: nn.Module, images: torch.Tensor, needs: Iterable[str] = ("logits",)) -> ModelOutput:
    """Forward ``images`` through ``model``, returning what ``needs`` asks for (logits always)."""
    needs = set(needs)
    if hasattr(model, "kdbench_outputs"):
        return model.kdbench_outputs(images, needs)
    if not needs & FEATURE_NEEDS:
        logits = model(images)
        return ModelOutput(logits=logits, member_logits=logits.unsqueeze(0) if "member_logits" in needs else None)
    if "preact" in needs:
        final, stages, preact = model.forward_intermediates(images, return_preact=True)
    else:
        final, stages = model.forward_intermediates(images)
        preact = None
    embedding = model.forward_head(final, pre_logits=True)
    logits = model.get_classifier()(embedding)
    return ModelOutput(logits=logits, embedding=embedding, stages=list(stages), preact=preact,
                       member_logits=logits.unsqueeze(0) if "member_logits" in needs else None)
