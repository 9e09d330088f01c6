"""TGeo-KD: Hu et al., ICLR 2024, "Less or More From Teacher: Exploiting Trilateral Geometry for Knowledge
Distillation" (arXiv:2312.15112v2). No reference code is published; this follows the paper's equations.

Loss (Eq. 3, the inner objective of Eq. 5), a per-sample fusion of KD and CE:

    L = mean_i [ alpha_i * T^2 KL(softmax(t_i/T) || softmax(s_i/T))  +  (1 - alpha_i) * CE(s_i, y_i) ]
    alpha_i = sigmoid(f_omega(Delta_i))                                                      (Sec. 3.1)
    Delta_i = [G-S, G-T, T-S, G-Tbar, Tbar-S, S, T, Tbar, G]   (9C numbers; Eqs. 6-10)

with S, T the student's and teacher's softmax probabilities (temperature 1), G the one-hot label and Tbar the
teacher's mean probability vector over the training samples of the sample's class (``class_means``, one pass of
the teacher over the un-augmented training part before training, cached per teacher weights and labels).
Returned as the terms ``kd`` = mean(alpha * KD) and ``ce`` = mean((1 - alpha) * CE); the alpha of these terms is
detached, so the student alone learns from them.

omega learns only from the bilevel objective (Eqs. 4-5): min_omega CE of the student on held-out data at
theta*(omega). Each outer step (every ``outer_every`` training steps, before the step's own terms) takes one
look-ahead of the student, meta-reweighting style:

    theta' = theta - inner_lr * grad_theta L_train(theta, omega)    (the batch's Eq. 3, graph kept to omega)
    omega <- Adam(omega, grad_omega CE(student(theta'; x_val), y_val))

run through ``torch.func.functional_call`` on the student with copies of its buffers (its BN statistics are left
untouched), on the next validation batch of the training batch's size: a stream, in order and cycled, over the
validation split (``dataset.validation_fraction``, auto 0.1, carved class-balanced from the training set), whatever
its loader's batch size. Delta enters f_omega as a constant input (S detached).
The step's terms then use the updated omega. Under data parallelism the omega gradient is averaged over the
ranks, so every rank keeps the same omega.

Defaults and their sources:
- temperature 4.0: Sec. 4.1 (CIFAR-100); the T^2 factor is Eq. (1).
- f_omega a 2-layer MLP (Linear(9C, 128) -> ReLU -> Linear(128, 1), then sigmoid): Table 5 picks the 2-layer
  MLP; Table 7's "dim size" 128 (CIFAR-100, ImageNet) is read as its hidden width. The activation (ReLU) is
  kdbench's choice: the paper does not name one.
- omega's optimiser Adam, lr 1e-3, weight decay 1e-4: kdbench's choice (the paper gives no separate setting for
  omega; Table 7 lists "{Adam, SGD}", lr 1e-1, weight decay 5e-4 for the whole CIFAR-100 run). These are the
  meta-network settings of Meta-Weight-Net (Shu et al., NeurIPS 2019), the meta-reweighting scheme followed here.
- inner_lr 0.1 (the look-ahead's SGD step): kdbench's choice, Table 7's initial learning rate; a fixed value
  (the method does not see the engine's schedule).
- outer_every 1: omega "is optimized with theta in an end-to-end way" (Sec. 3.2): an outer step every step.

The weights of f_omega are parameters that the engine's optimiser never sees a gradient for (requires_grad off);
they, their Adam moments and step, the initial omega, the validation-split position and the running alpha
statistics are all registered state, so checkpoints hold them and a resumed run continues the same way. Without
a validation split or a student in the build context (the in-process test harness) the outer step is skipped
(a warning says so) and alpha stays a fixed function of Delta.
Before each evaluation ``select_on_validation`` records the outer steps taken, how far omega has moved from its
initial value (L2), the mean alpha over the training batches since the last evaluation and the student's CE on
the validation split (the outer objective of Eq. 4).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..errors import ConfigError
from ..losses.tgeokd import tgeokd_loss, tgeokd_terms, trilateral_features
from ..models import run_model
from ._class_means import teacher_class_average
from .base import BuildContext, Method, register_method

log = logging.getLogger("kdbench")

FEATURE_BLOCKS = 9  # Eq. (10): five edges and four vertices, C numbers each
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults


def teacher_class_probabilities(context: BuildContext) -> torch.Tensor:
    """(num_classes, C) mean teacher softmax probabilities (temperature 1) of each class over the un-augmented
    training part (CPU, float32; summed in float64), cached per teacher and labels. A class without a training sample
    gets a zero row (no training batch can ask for it)."""
    return teacher_class_average(
        context, lambda images: run_model(context.teacher, images, {"logits"}).logits.double().softmax(dim=1),
        "tgeokd_class_probs")


class FusionRatioNet(nn.Module):
    """f_omega: Linear(in_dim, hidden) -> ReLU -> Linear(hidden, 1); alpha = sigmoid(f_omega(Delta)).

    Its weights are trained by :meth:`adam_step` alone (torch.optim.Adam's update, L2 weight decay added to the
    gradient), whose moments and step count are buffers; the engine's optimiser never gets a gradient for them."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.net.requires_grad_(False)
        for i, p in enumerate(self.net.parameters()):
            self.register_buffer(f"exp_avg_{i}", torch.zeros_like(p))
            self.register_buffer(f"exp_avg_sq_{i}", torch.zeros_like(p))
        self.register_buffer("step", torch.zeros((), dtype=torch.float32))

    def weights(self) -> dict[str, torch.Tensor]:
        return dict(self.net.named_parameters())

    def alpha(self, delta: torch.Tensor, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B,) fusion ratios for features ``delta`` (B, in_dim); ``weights`` replaces omega (for the bilevel
        gradient), else the current omega."""
        out = functional_call(self.net, weights if weights is not None else self.weights(), (delta,))
        return torch.sigmoid(out).squeeze(1)

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.net.parameters()])

    @torch.no_grad()
    def adam_step(self, grads: list[torch.Tensor], lr: float, weight_decay: float) -> torch.Tensor:
        """One Adam update of omega with ``grads``; skipped as a whole (nothing changes) where any gradient is not
        finite. Returns whether it was applied (a bool tensor: no host synchronisation)."""
        ok = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        beta1, beta2 = ADAM_BETAS
        step = self.step + 1
        bias1, bias2 = 1 - beta1**step, 1 - beta2**step
        for i, (p, g) in enumerate(zip(self.net.parameters(), grads)):
            m, v = getattr(self, f"exp_avg_{i}"), getattr(self, f"exp_avg_sq_{i}")
            g = g + weight_decay * p if weight_decay else g
            m_new = m + (1 - beta1) * (g - m)
            v_new = beta2 * v + (1 - beta2) * g * g
            p_new = p - (lr / bias1) * m_new / (v_new.sqrt() / bias2.sqrt() + ADAM_EPS)
            for old, new in ((m, m_new), (v, v_new), (p, p_new)):
                old.copy_(torch.where(ok, new, old))
        self.step.copy_(torch.where(ok, step, self.step))
        return ok


def lookahead_validation_loss(student: nn.Module, fusion: FusionRatioNet, weights: dict[str, torch.Tensor],
                              images: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor,
                              class_means: torch.Tensor, val_images: torch.Tensor, val_targets: torch.Tensor,
                              temperature: float, inner_lr: float) -> torch.Tensor:
    """The outer objective of Eq. (4) after one look-ahead step of Eq. (5), as a function of omega (``weights``):

        theta' = theta - inner_lr * grad_theta L(theta, omega)   on (images, targets), L = Eq. (3)
        returns CE(student(theta'; val_images), val_targets)

    The student runs through ``functional_call`` with its own parameters (as new leaves) and copies of its
    buffers, so neither its weights, its gradients nor its BN statistics change; the graph from the result to
    ``weights`` is kept (second order through the inner gradient). Delta is built from the detached student
    probabilities (an input of f_omega, Eqs. 6-10)."""
    theta = {n: p.detach().requires_grad_(True) for n, p in student.named_parameters() if p.requires_grad}
    buffers = {n: b.clone() for n, b in student.named_buffers()}
    logits = _logits(functional_call(student, {**theta, **buffers}, (images,)))
    with torch.autocast(logits.device.type, enabled=False):
        logits, teacher_logits = _full(logits), _full(teacher_logits.detach())
        delta = trilateral_features(logits.detach().softmax(dim=1), teacher_logits.softmax(dim=1), class_means,
                                    targets)
        omega_dtype = next(iter(weights.values())).dtype
        inner = tgeokd_loss(logits, teacher_logits, targets, fusion.alpha(delta.to(omega_dtype), weights), temperature)
    grads = torch.autograd.grad(inner, list(theta.values()), create_graph=True, allow_unused=True)
    fast = {n: p if g is None else p - inner_lr * g for (n, p), g in zip(theta.items(), grads)}
    val_logits = _logits(functional_call(student, {**fast, **buffers}, (val_images,)))
    with torch.autocast(val_logits.device.type, enabled=False):
        return F.cross_entropy(_full(val_logits), val_targets)


def _full(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 where autocast left it in half precision (float64 stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _logits(out) -> torch.Tensor:
    if not torch.is_tensor(out) or out.dim() != 2:
        raise ConfigError("method=tgeokd: the student's forward must return (B, C) logits for the look-ahead step")
    return out


@register_method("tgeokd")
class TGeoKD(Method):
    needs_training_samples = True  # the teacher's class means come from a pass over the training images
    needs_validation = True  # omega's outer objective is the student's CE on a validation split (Eq. 4)
    task_terms = frozenset({"ce"})
    ranges = {"hidden_dim": ">= 1", "omega_lr": "> 0", "omega_weight_decay": ">= 0", "inner_lr": "> 0",
              "outer_every": ">= 1"}

    def __init__(self, temperature: float = 4.0, hidden_dim: int = 128, omega_lr: float = 1e-3,
                 omega_weight_decay: float = 1e-4, inner_lr: float = 0.1, outer_every: int = 1):
        super().__init__()
        from ..config_schema import range_error  # imported here, as kdbench/methods/__init__.py does

        values = {"temperature": temperature, "hidden_dim": hidden_dim, "omega_lr": omega_lr,
                  "omega_weight_decay": omega_weight_decay, "inner_lr": inner_lr, "outer_every": outer_every}
        for key, value in values.items():
            if problem := range_error(f"method.{key}", value, self.range_of(key)):
                raise ConfigError(problem)
        self.temperature, self.hidden_dim, self.outer_every = temperature, hidden_dim, outer_every
        self.inner_lr = inner_lr
        self.omega_lr, self.omega_weight_decay = omega_lr, omega_weight_decay
        self.fusion = None
        self.__dict__["_student"] = None  # the student being trained: looked ahead through, never a submodule
        self.__dict__["_validation"] = None
        self.__dict__["_val_iter"] = None
        self.__dict__["_val_pending"] = None

    def build(self, student, teacher, context):
        classes = student.logits.shape[1]
        if teacher is None or teacher.logits is None or teacher.logits.shape[1] != classes:
            raise ConfigError("method=tgeokd needs teacher logits over the student's classes")
        means = teacher_class_probabilities(context)
        if means.shape[1] != classes:
            raise ConfigError(f"method=tgeokd: the teacher's class means have {means.shape[1]} columns, the student "
                              f"{classes} classes")
        self.register_buffer("class_means", means)
        self.fusion = FusionRatioNet(FEATURE_BLOCKS * classes, self.hidden_dim)
        self.register_buffer("omega_init", self.fusion.flat().clone())
        self.register_buffer("outer_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("skipped_outer_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("val_cursor", torch.zeros((), dtype=torch.int64))  # samples taken in this pass
        self.register_buffer("alpha_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("alpha_count", torch.zeros((), dtype=torch.float64))
        self.__dict__["_student"] = context.student
        self.__dict__["_validation"] = context.validation_batches
        self.__dict__["_val_iter"] = None
        self.__dict__["_val_pending"] = None
        if context.student is None or context.validation_batches is None:
            missing = "validation split" if context.validation_batches is None else "student"
            log.warning("method=tgeokd: no %s in the build context: the outer step is skipped and omega stays at its "
                        "initial value", missing)

    # -- the outer (bilevel) step ------------------------------------------------------------------------------
    def _start_pass(self) -> None:
        self.__dict__["_val_iter"] = iter(self._validation())
        self.__dict__["_val_pending"] = None

    def _take(self, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Up to ``n`` next samples of the current pass over the validation split (None: the pass is over)."""
        pieces = []
        while n > 0:
            pending = self._val_pending
            if pending is None or len(pending[1]) == 0:
                batch = next(self._val_iter, None)
                if batch is None:
                    break
                pending = batch[0], batch[1]
            take = min(n, len(pending[1]))
            pieces.append((pending[0][:take], pending[1][:take]))
            self.__dict__["_val_pending"] = (pending[0][take:], pending[1][take:])
            n -= take
        if not pieces:
            return None
        return torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])

    def _next_validation_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``size`` samples of the validation split, in order, as one stream over its batches (the last
        chunk of a pass may be smaller; the next starts a new pass). ``val_cursor`` counts the samples taken in the
        current pass, so a fresh iterator (a resumed run) first skips those."""
        if self._val_iter is None:
            self._start_pass()
            skip = int(self.val_cursor)
            if skip and self._take(skip) is None:
                self._start_pass()
                self.val_cursor.zero_()
        chunk = self._take(size)
        if chunk is None:  # the previous pass is over
            self._start_pass()
            self.val_cursor.zero_()
            chunk = self._take(size)
            if chunk is None:
                raise ConfigError("method=tgeokd: the validation split is empty")
        self.val_cursor += len(chunk[1])
        return chunk

    def outer_step(self, images: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        """One update of omega on the next validation batch (Eqs. 4-5; see the module docstring)."""
        val_images, val_targets = self._next_validation_batch(len(targets))
        weights = {n: p.detach().clone().requires_grad_(True) for n, p in self.fusion.weights().items()}
        loss = lookahead_validation_loss(self._student, self.fusion, weights, images, targets, teacher_logits,
                                         self.class_means, val_images, val_targets, self.temperature, self.inner_lr)
        grads = list(torch.autograd.grad(loss, list(weights.values())))
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            grads = list(flat.split([g.numel() for g in grads]))
            grads = [g.reshape(w.shape) for g, w in zip(grads, weights.values())]
        ok = self.fusion.adam_step(grads, self.omega_lr, self.omega_weight_decay)
        self.outer_steps += ok.long()
        self.skipped_outer_steps += (~ok).long()

    def forward(self, student, teacher, batch, progress):
        teacher_logits = teacher.logits.detach()
        if (self.training and torch.is_grad_enabled() and self._student is not None and self._validation is not None
                and progress.step % self.outer_every == 0):
            self.outer_step(batch.images, batch.targets, teacher_logits)
        with torch.autocast(student.logits.device.type, enabled=False):
            s_logits, t_logits = _full(student.logits), _full(teacher_logits)
            with torch.no_grad():
                delta = trilateral_features(s_logits.softmax(dim=1), t_logits.softmax(dim=1), self.class_means,
                                            batch.targets)
                alpha = self.fusion.alpha(delta.to(self.omega_init.dtype)).to(s_logits.dtype)
                if self.training:
                    self.alpha_sum += alpha.double().sum()
                    self.alpha_count += alpha.numel()
            kd, ce = tgeokd_terms(s_logits, t_logits, batch.targets, alpha, self.temperature)
        return {"ce": ce, "kd": kd}

    def select_on_validation(self, student, targets):
        """What omega has learnt so far (recorded in result.json before each evaluation); resets the alpha mean."""
        record = {"outer_steps": int(self.outer_steps), "skipped_outer_steps": int(self.skipped_outer_steps),
                  "omega_shift": float((self.fusion.flat() - self.omega_init).norm()),
                  "alpha_mean": float(self.alpha_sum / self.alpha_count) if self.alpha_count > 0 else None,
                  "validation_ce": float(F.cross_entropy(student.logits.float(), targets.to(student.logits.device)))}
        self.alpha_sum.zero_()
        self.alpha_count.zero_()
        return record
