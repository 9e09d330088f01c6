"""DINO self-distillation into a random teacher: Sarnthein et al., "Random Teachers are Good Teachers", ICML 2023.

The student's pooled embedding goes through a DINO head ``g_s``, the frozen teacher's through the teacher's own
head ``g_t``, and the student minimises (``kdbench.losses.dino_loss``, the ``same`` view pairing)

    L = dino_weight * mean_batch [ - sum_k softmax(g_t(f_t(x)) / tau_t)_k * log softmax(g_s(f_s(x)) / tau_s)_k ]

with no labels. The head (safelix/dinopl ``dinopl/core.py`` ``DINOHead``, ``dinopl/modules/{mlp,l2bottleneck,
linear}.py``, configuration ``hid_dims [2048, 2048]``, ``l2bot_dim 256``, ``l2bot_cfg -/lb/fn/wn/l/-``,
``out_dim 65536``, ``mlp_act GELU``, no BN): Linear(d, 2048) GELU, Linear(2048, 2048) GELU (the activation follows
every hidden layer), Linear(2048, 256) with bias, L2 normalisation of the 256-d features, Linear(256, 65536)
without bias; every weight trunc-normal (std 0.02, cut at +-2), every bias 0 (``head_init_method trunc_normal``).
The config string names a weight normalisation of that last layer (``wn``: rows scaled to unit norm, no gain), but
the reference's ``Linear.forward`` (since commit 9c88484, so in the paper's runs and at cd39e78) ignores the
normalised weight it is handed and multiplies by the raw one; ``norm_last_layer=False`` (the default) reproduces
what the code computes, ``True`` what the config string describes. Nothing of the head is frozen
(``wn_freeze_epochs 0``); centering is off (``t_cmom nan``).

The teacher's head is random and frozen, owned by the method: drawn from a generator seeded by a hash of the
teacher's weights (so it is a function of ``teacher.seed`` for a random teacher), kept as non-persistent buffers
(not trained, not checkpointed: rebuilt identically). The student head's own random draw continues that generator
(as the reference's student continues the teacher's generator), and the student's head starts from the teacher's
as the student's encoder starts from the teacher: ``head_init`` / ``head_init_scale`` default to
``student.init_from_teacher`` / ``student.init_scale`` (equal: a copy, the reference's ``s_init=teacher``;
neighborhood / interpolated[_vp]: mixed with the own draw by ``kdbench.engine.student.mix_from_teacher``; null: the
own draw alone, ``s_init=random``). A teacher of another architecture gets a head on its own embedding width.

Defaults: ``configs/cifar10_distillation_v2.json`` (tau_t = tau_s = 1, no centering, one 32 px view, AdamW lr 1e-3,
weight decay 0; see conf/experiment/random_teachers/).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..losses import dino_loss
from ..models.mixing import check_from_teacher, mix_from_teacher
from .base import Method, register_method


def trunc_normal_(tensor: torch.Tensor, std: float = 0.02, a: float = -2.0, b: float = 2.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, std^2) cut to [a, b] by the inverse CDF: u ~ U(2 Phi(a/std) - 1, 2 Phi(b/std) - 1), x = std sqrt(2)
    erfinv(u), clamped (the sampler of dinopl ``dinopl/modules/init.py``, copied from older torch releases; the
    installed torch's ``nn.init.trunc_normal_`` rejection-samples, which gives other draws from one generator)."""
    def cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    with torch.no_grad():
        tensor.uniform_(2 * cdf(a / std) - 1, 2 * cdf(b / std) - 1, generator=generator)
        return tensor.erfinv_().mul_(std * math.sqrt(2.0)).clamp_(min=a, max=b)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """x / max(||x||_2, 1e-12) along the last dimension (dinopl ``LpNormalize``)."""
    return x / x.norm(2, dim=-1, keepdim=True).clamp(min=1e-12)


class DINOHead(nn.Module):
    """MLP (Linear + GELU per hidden width), Linear to ``bottleneck_dim`` + L2 normalisation, bias-free Linear to
    ``out_dim`` (its rows unit-normalised with ``norm_last_layer``)."""

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dims=(2048, 2048), bottleneck_dim: int = 256,
                 norm_last_layer: bool = False):
        super().__init__()
        dims = [int(in_dim), *[int(d) for d in hidden_dims]]
        self.mlp = nn.Sequential(*[nn.Sequential(nn.Linear(i, o), nn.GELU()) for i, o in zip(dims[:-1], dims[1:])])
        self.bottleneck = nn.Linear(dims[-1], int(bottleneck_dim))
        self.last_layer = nn.Linear(int(bottleneck_dim), int(out_dim), bias=False)
        self.norm_last_layer = bool(norm_last_layer)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Every Linear in order (MLP layers, bottleneck, last layer): weight ~ trunc-normal(0, 0.02, [-2, 2]),
        bias 0 (dinopl ``Linear.reset_parameters(method='trunc_normal')``, same draws from the same generator)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = _unit_rows(self.bottleneck(self.mlp(x)))
        weight = _unit_rows(self.last_layer.weight) if self.norm_last_layer else self.last_layer.weight
        return F.linear(z, weight)


def _frozen(module: nn.Module) -> nn.Module:
    """``module`` with its parameters turned into non-persistent buffers: moved by ``.to()``, never trained, never in
    a state_dict or a parameter count."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                del sub._parameters[name]
                sub.register_buffer(name, param.detach(), persistent=False)
    return module.eval()


def _seed_of(fingerprint: str | None) -> int:
    """The seed of the heads' generator: ``kdbench.engine.student.draw_seed`` of the teacher (from its fingerprint)."""
    return int(fingerprint[:15], 16) if fingerprint else int(torch.initial_seed()) % (2 ** 60)


@register_method("dino")
class DINO(Method):
    needs = frozenset({"embedding"})
    task_terms = frozenset()  # no labels: every term is distillation
    ranges = {"out_dim": ">= 1", "bottleneck_dim": ">= 1", "student_temp": "> 0", "teacher_temp": "> 0",
              "head_init_scale": ">= 0"}

    def __init__(self, out_dim: int = 65536, hidden_dims: list = (2048, 2048), bottleneck_dim: int = 256,
                 norm_last_layer: bool = False, student_temp: float = 1.0, teacher_temp: float = 1.0,
                 dino_weight: float = 1.0, head_init: str | None = None, head_init_scale: float = 0.0):
        super().__init__()
        self.out_dim, self.bottleneck_dim, self.norm_last_layer = out_dim, bottleneck_dim, norm_last_layer
        self.hidden_dims = [int(d) for d in hidden_dims]
        if any(d < 1 for d in self.hidden_dims):
            raise ConfigError(f"method.hidden_dims: widths must be >= 1, got {self.hidden_dims}")
        self.student_temp, self.teacher_temp, self.dino_weight = student_temp, teacher_temp, dino_weight
        self.head_init, self.head_init_scale = head_init, head_init_scale
        if head_init is not None:
            check_from_teacher(str(head_init), float(head_init_scale), "method.head_init", "method.head_init_scale")

    def _head(self, in_dim: int, generator: torch.Generator | None) -> DINOHead:
        head = DINOHead(in_dim, self.out_dim, self.hidden_dims, self.bottleneck_dim, self.norm_last_layer)
        head.reset_parameters(generator)
        return head

    def build(self, student, teacher, context):
        s_dim, t_dim = student.embedding.flatten(1).shape[1], teacher.embedding.flatten(1).shape[1]
        # one generator for both heads, the teacher's first (the reference draws every part of the pair from one
        # generator): both are functions of the teacher's weights
        generator = torch.Generator().manual_seed(_seed_of(context.teacher_fingerprint))
        t_head = self._head(t_dim, generator)
        s_head = self._head(s_dim, generator)
        if self.head_init is not None:
            if s_dim != t_dim:
                raise ConfigError(f"method.head_init: {self.head_init} starts the student's head from the teacher's, "
                                  f"which needs equal embedding widths (student {s_dim}, teacher {t_dim}); "
                                  "valid here: method.head_init=null")
            with torch.no_grad():
                theirs = dict(t_head.named_parameters())
                for name, param in s_head.named_parameters():
                    param.copy_(mix_from_teacher(theirs[name], param.detach().clone(), str(self.head_init),
                                                 float(self.head_init_scale)))
        self.student_head = s_head
        self.teacher_head = _frozen(t_head)

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "teacher_head"):
            self.teacher_head.eval()
        return self

    def forward(self, student, teacher, batch, progress):
        s_out = self.student_head(student.embedding.flatten(1))
        with torch.no_grad():
            t_out = self.teacher_head(teacher.embedding.flatten(1))
        return {"dino": self.dino_weight * dino_loss(s_out, t_out, student_temp=self.student_temp,
                                                     teacher_temp=self.teacher_temp)}
