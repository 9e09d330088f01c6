"""TAID: Shing et al. ICLR 2025, temporally adaptive interpolated distillation, on classification logits.

Each step the student is trained towards ``p_t = softmax((1 - t) sg(s) + t z_T)`` (``kdbench.losses.taid_loss``)
and then ``t`` moves on, as SakanaAI/TAID ``src/distil_losses/taid.py`` (``TAID.update_t``):

    first step:  remember the loss, leave t and the momentum unchanged
    later:       m <- beta m + (1 - beta) (L_prev - L) / (L_prev + 1e-15)
                 t <- min(t_end, max(t_start + (t_end - t_start) * step / total_steps,
                                     t + alpha * sigmoid(m) * (1 - t)))
                 (with ``adaptive=False``: t <- the linear target alone)

``t`` is used for the loss of the step before it is updated. ``t``, the momentum and the previous loss are
registered float32 buffers, so they are checkpointed and a resumed run continues with the same ``t``.

For classification: the reference's step counter (Lightning's ``global_step`` over
``estimated_stepping_batches``) becomes ``progress.step`` over ``epochs * steps_per_epoch``; every image is
one "token" of the reference's masked mean. Defaults are the reference's (``src/arguments.py``: t_start 0.4,
t_end 1.0, alpha 5e-4, beta 0.99, as its Phi-3 script; the StableLM script uses t_start 0.2). The reference
trains with the distillation loss alone (``--distil_ratio 1.0``, so its LM cross-entropy has weight 0):
hence ``ce_weight = 0``, ``taid_weight = 1``; the paper publishes no CIFAR recipe.
The update runs on the device without a host synchronisation (``torch.where`` in place of the reference's
Python branch on ``isinf(prev_loss)``); it changes nothing in the arithmetic.
"""

import torch
import torch.nn.functional as F

from ..losses import taid_loss
from .base import Method, register_method


@register_method("taid")
class TAID(Method):
    ranges = {"t_start": "[0, 1)", "t_end": "(0, 1]", "alpha": "[0, 1]", "beta": "[0, 1)"}

    def __init__(self, t_start: float = 0.4, t_end: float = 1.0, alpha: float = 5e-4, beta: float = 0.99,
                 adaptive: bool = True, ce_weight: float = 0.0, taid_weight: float = 1.0):
        super().__init__()
        if not (0.0 <= t_start < 1.0 and 0.0 < t_end <= 1.0 and 0.0 <= alpha <= 1.0):
            raise ValueError(f"TAID needs 0 <= t_start < 1, 0 < t_end <= 1, 0 <= alpha <= 1; "
                             f"got t_start={t_start}, t_end={t_end}, alpha={alpha}")
        self.t_start, self.t_end, self.alpha, self.beta, self.adaptive = t_start, t_end, alpha, beta, adaptive
        self.ce_weight, self.taid_weight = ce_weight, taid_weight
        self.register_buffer("t", torch.tensor(t_start, dtype=torch.float32))
        self.register_buffer("prev_loss", torch.tensor(float("inf"), dtype=torch.float32))
        self.register_buffer("momentum", torch.zeros((), dtype=torch.float32))

    @torch.no_grad()
    def advance(self, loss: torch.Tensor, step: int, total_steps: int) -> None:
        """Move ``t`` after a step whose TAID loss was ``loss`` (the reference's ``update_t``)."""
        loss = loss.detach().float()
        first = torch.isinf(self.prev_loss)
        relative_change = (self.prev_loss - loss) / (self.prev_loss + 1e-15)
        momentum = torch.where(first, self.momentum, self.beta * self.momentum + (1 - self.beta) * relative_change)
        t_target = self.t_start + (self.t_end - self.t_start) * (step / total_steps)
        if self.adaptive:
            delta = self.alpha * torch.sigmoid(momentum) * (1 - self.t)
            t = torch.clamp(torch.maximum(self.t + delta, torch.full_like(self.t, t_target)), max=self.t_end)
        else:
            t = torch.full_like(self.t, t_target)
        self.t.copy_(torch.where(first, self.t, t))
        self.momentum.copy_(momentum)
        self.prev_loss.copy_(loss)

    def forward(self, student, teacher, batch, progress):
        loss = taid_loss(student.logits, teacher.logits, t=self.t)
        if self.training:
            self.advance(loss, progress.step, progress.epochs * progress.steps_per_epoch)
        return {"ce": self.ce_weight * F.cross_entropy(student.logits, batch.targets), "taid": self.taid_weight * loss}
