"""TRG: Zhang, Liu, He, "Knowledge Distillation via Token-level Relationship Graph" (arXiv 2306.12442).

loss = ce_weight * CE + kd_weight * KD(T) + context_weight * L_ctx + edge_weight * L_edge + node_weight * L_node
(:mod:`kdbench.losses.trg`: the paper's L_logit + alpha L_inner + beta L_local + gamma L_global).

Tokens: the stage map ``stages[stage]`` of each model (the last by default: the paper tokenises a CNN's
penultimate-layer feature map; a timm ViT's patch tokens arrive the same way, as the NCHW map of
``forward_intermediates``), average-pooled into ``patch_size`` x ``patch_size`` patches; where the two grids
differ, both are average-pooled to the smaller one, so token ``i`` covers the same image region in both models.
``tokens_per_image`` positions are drawn per image, uniformly without replacement (the same positions for both
models; the global torch RNG, so seeded runs repeat), and the ``B * K`` tokens of the batch are the graph's
nodes. Node alignment compares trainable linear projections of both models' tokens to ``proj_dim`` (built from
the sample outputs' widths); edges and context use each model's tokens in its own width. The node temperature
falls linearly over training from ``tau_start`` to ``tau_end`` (the paper's coarse-to-fine dynamic temperature).

No reference code exists and the paper's text beyond its abstract could not be retrieved: the structure follows
the paper's losses as summarised in secondary sources; the defaults (weights 1, KD T 4, 16 tokens per image, 8
neighbours, sigma 1, 128-d projections, tau 0.5 -> 0.1, patch 1, last stage) are kdbench's own, see
docs/paper_methods.md. The losses run in float32 under bf16/fp16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..losses import kd_loss, trg_context_loss, trg_edge_loss, trg_node_loss
from ._connectors import in_float32
from .base import Method, register_method


def stage_tokens(student_map: torch.Tensor, teacher_map: torch.Tensor, patch_size: int):
    """``(B, H*W, C)`` tokens of both maps on one grid: ``patch_size`` average pooling, then both pooled to the
    smaller grid where they differ."""
    maps = [F.avg_pool2d(m, patch_size, ceil_mode=True) if patch_size > 1 else m for m in (student_map, teacher_map)]
    grid = (min(m.shape[-2] for m in maps), min(m.shape[-1] for m in maps))
    maps = [m if tuple(m.shape[-2:]) == grid else F.adaptive_avg_pool2d(m, grid) for m in maps]
    return [m.flatten(2).transpose(1, 2) for m in maps]


def sample_tokens(student_tokens: torch.Tensor, teacher_tokens: torch.Tensor, per_image: int):
    """The same ``per_image`` positions of each image from both ``(B, L, C)`` token sets (uniform, without
    replacement; all of them when an image has no more)."""
    batch, length = student_tokens.shape[:2]
    if per_image >= length:
        return student_tokens, teacher_tokens
    index = torch.rand(batch, length, device=student_tokens.device).argsort(dim=1)[:, :per_image]
    pick = lambda t: t.gather(1, index.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
    return pick(student_tokens), pick(teacher_tokens)


@register_method("trg")
class TRG(Method):
    needs = frozenset({"logits", "stages"})

    ranges = {"stage": "any", "tokens_per_image": ">= 1", "neighbours": ">= 1", "sigma": "> 0", "patch_size": ">= 1",
              "proj_dim": ">= 1", "tau_start": "> 0", "tau_end": "> 0"}

    def __init__(self, ce_weight: float = 1.0, kd_weight: float = 1.0, temperature: float = 4.0,
                 node_weight: float = 1.0, edge_weight: float = 1.0, context_weight: float = 1.0, stage: int = -1,
                 patch_size: int = 1, tokens_per_image: int = 16, neighbours: int = 8, sigma: float = 1.0,
                 proj_dim: int = 128, tau_start: float = 0.5, tau_end: float = 0.1):
        super().__init__()
        self.ce_weight, self.kd_weight, self.temperature = ce_weight, kd_weight, temperature
        self.node_weight, self.edge_weight, self.context_weight = node_weight, edge_weight, context_weight
        self.stage, self.patch_size, self.tokens_per_image = stage, patch_size, tokens_per_image
        self.neighbours, self.sigma, self.proj_dim = neighbours, sigma, proj_dim
        self.tau_start, self.tau_end = tau_start, tau_end

    def build(self, student, teacher, context):
        for role, out in (("student", student), ("teacher", teacher)):
            if not -len(out.stages) <= self.stage < len(out.stages):
                raise ConfigError(f"method.stage: {self.stage} is out of range for the {role}'s "
                                  f"{len(out.stages)} stage maps")
        self.student_proj = nn.Linear(student.stages[self.stage].shape[1], self.proj_dim)
        self.teacher_proj = nn.Linear(teacher.stages[self.stage].shape[1], self.proj_dim)

    def node_temperature(self, progress) -> float:
        """``tau_start`` at the first step, falling linearly to ``tau_end`` at the last."""
        total = max(progress.epochs * progress.steps_per_epoch - 1, 1)
        done = min(max(progress.step / total, 0.0), 1.0)
        return self.tau_start + (self.tau_end - self.tau_start) * done

    def relation_terms(self, student, teacher, progress) -> dict[str, torch.Tensor]:
        s_tok, t_tok = stage_tokens(student.stages[self.stage], teacher.stages[self.stage].detach(), self.patch_size)
        s_tok, t_tok = sample_tokens(s_tok, t_tok, self.tokens_per_image)
        s_nodes = self.student_proj(s_tok.flatten(0, 1))
        t_nodes = self.teacher_proj(t_tok.flatten(0, 1))
        return {
            "trg_node": self.node_weight * in_float32(trg_node_loss, s_nodes, t_nodes, self.node_temperature(progress)),
            "trg_edge": self.edge_weight * in_float32(trg_edge_loss, s_tok.flatten(0, 1), t_tok.flatten(0, 1),
                                                      self.neighbours, self.sigma),
            "trg_context": self.context_weight * in_float32(trg_context_loss, s_tok, t_tok),
        }

    def forward(self, student, teacher, batch, progress):
        return {
            "ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets),
            "kd": self.kd_weight * kd_loss(student.logits, teacher.logits, temperature=self.temperature),
            **self.relation_terms(student, teacher, progress),
        }
