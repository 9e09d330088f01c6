"""Several frozen teachers behind one teacher interface (``teacher=ensemble``).

The ensemble's logits combine its members' logits ``z_1 .. z_K``:

    combine=logits:  z = (1/K) sum_k z_k                      (the default: mean of logits)
    combine=probs:   z = log((1/K) sum_k softmax(z_k))        (mean of probabilities at T 1, as MEAL V2's soft target;
                                                               softmax(z) is exactly that mean)

Its stage maps and embedding are those of one member (``features_from``); every member's logits are there too, stacked
(K, B, C) as ``ModelOutput.member_logits``, for methods that combine them their own way (MEAL V2). The combine rule
is a buffer, so it is part of the weights' fingerprint (the teacher-logit cache's key) with every member's weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .outputs import FEATURE_NEEDS, ModelOutput, run_model, supports

COMBINES = ("logits", "probs")


def combine_logits(stacked: torch.Tensor, combine: str) -> torch.Tensor:
    """(K, B, C) member logits -> (B, C) ensemble logits by ``combine`` (see the module docstring)."""
    if combine == "logits":
        return stacked.mean(0)
    if combine == "probs":
        return torch.logsumexp(torch.log_softmax(stacked.float(), dim=-1), dim=0) - math.log(stacked.shape[0])
    raise ValueError(f"combine: unknown rule '{combine}'; valid: {', '.join(COMBINES)}")


class TeacherEnsemble(nn.Module):
    def __init__(self, members: list[nn.Module], combine: str = "logits", features_from: int = 0):
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"combine: unknown rule '{combine}'; valid: {', '.join(COMBINES)}")
        if not 0 <= features_from < len(members):
            raise ValueError(f"features_from: {features_from} is not a member index (0..{len(members) - 1})")
        self.members = nn.ModuleList(members)
        self.combine, self.features_from = combine, features_from
        self.register_buffer("combine_code", torch.tensor(COMBINES.index(combine)))
        self.kdbench_name = "ensemble(" + "+".join(str(getattr(m, "kdbench_name", type(m).__name__))
                                                   for m in members) + ")"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return combine_logits(torch.stack([member(images) for member in self.members]), self.combine)

    def kdbench_supports(self, needs) -> str | None:
        """Why the ensemble cannot give ``needs`` (None: it can): features come from the ``features_from`` member."""
        return supports(self.members[self.features_from], set(needs) - {"member_logits"})

    def kdbench_outputs(self, images: torch.Tensor, needs) -> ModelOutput:
        needs = set(needs)
        outputs = [run_model(member, images, needs - {"member_logits"} if k == self.features_from else {"logits"})
                   for k, member in enumerate(self.members)]
        stacked = torch.stack([o.logits for o in outputs])
        features = outputs[self.features_from] if needs & FEATURE_NEEDS else ModelOutput(logits=stacked[0])
        return ModelOutput(logits=combine_logits(stacked, self.combine), embedding=features.embedding,
                           stages=features.stages, preact=features.preact,
                           member_logits=stacked if "member_logits" in needs else None)
