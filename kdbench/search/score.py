"""DisWOT's training-free score of a student for a teacher (Dong, Li & Wei, CVPR 2023).

For one labelled batch: the teacher's and the candidate's last stage map (the references' ``feats[-2]``) give the
relation term, the gradients of each network's cross-entropy with respect to its final linear weight give the
semantic term (:mod:`kdbench.losses.diswot`); the score is ``-(relation + semantic)``, higher is better, as
``compute_diswot_procedure`` of ``exps/parse_nb201_distill.py`` adds ``score_sp + score_ickd``.

This is the score the paper's code computes (README "Core Code", ``exps/parse_nb201_distill.py``). The
repository also registers a measure named ``diswot`` in ``predictor/pruners/measures/diswot.py``: that one is a
Zen-NAS-style score (the log of the BN layers' running standard deviations after a forward of Gaussian noise)
and is not ported.

As the reference does:

- candidates are scored at random initialisation; ``init="gaussian"`` re-draws the weights as
  ``network_weight_gaussian_init`` does (conv and linear weights N(0, 1), their biases 0, norm layers weight 1 and
  bias 0), ``init="default"`` keeps the model's own initialisation (the reference's evolutionary searches build
  their candidates so);
- the networks run in training mode (BN normalises with the batch's statistics);
- the classifier gradient is the gradient of the batch-mean cross-entropy, which for a linear classifier is
  :func:`kdbench.losses.diswot.classifier_gradient` (no backward through the network is needed).

Where kdbench differs: every candidate sees the same batch and a fresh teacher gradient (the reference draws a
new batch per candidate and never clears the teacher's gradient, so its teacher term accumulates over the
candidates scored before), and each candidate is initialised from the same seed, so a score does not depend on
the order of the search.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..losses.diswot import classifier_gradient, diswot_relation_loss, diswot_semantic_loss
from ..models import run_model
from ..tasks.base import batch_statistics

INITS = ("gaussian", "default")


def gaussian_init(model: nn.Module) -> nn.Module:
    """Re-draw the weights the way the reference's ``network_weight_gaussian_init`` does, module by module in
    registration order from the global torch RNG: ``Conv2d`` and ``Linear`` weights from N(0, 1) with zero
    biases, ``BatchNorm2d`` / ``GroupNorm`` affine weights 1 and biases 0; other modules are left alone."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    return model


@dataclass(frozen=True)
class Probe:
    """What one network gives the score: its last stage map and its classifier-weight gradient on the batch."""

    stage_map: torch.Tensor
    gradient: torch.Tensor


def probe(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_stats: bool = True) -> Probe:
    """The model's :class:`Probe` on a labelled batch. ``batch_stats``: BN layers normalise with the batch's
    statistics (the reference's training mode; running statistics stay as they were), else as the model's mode
    says (a trained teacher in eval mode)."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Linear):
        name = getattr(model, "kdbench_name", type(model).__name__)
        raise ConfigError(f"search: {name} has no single linear classifier ({type(classifier).__name__}); DisWOT's "
                          f"semantic term needs the gradient of one")
    with torch.no_grad(), batch_statistics(model, enabled=batch_stats):
        out = run_model(model, images, {"stages"})
    wide = lambda x: x.to(torch.promote_types(x.dtype, torch.float32))  # float32 at least (bf16 / fp16 runs)
    gradient = classifier_gradient(wide(out.logits), wide(out.embedding), targets)
    return Probe(wide(out.stages[-1]), gradient)


@dataclass(frozen=True)
class Score:
    score: float
    relation: float
    semantic: float


def diswot_score(student: Probe, teacher: Probe) -> Score:
    """``-(relation + semantic)`` and its two terms (distances, lower is more similar)."""
    relation = float(diswot_relation_loss(student.stage_map, teacher.stage_map))
    semantic = float(diswot_semantic_loss(student.gradient, teacher.gradient))
    return Score(-(relation + semantic), relation, semantic)


def prepare(create, name: str, num_classes: int, image_size: int, seed: int, init: str) -> nn.Module:
    """A candidate at random initialisation, a function of ``seed`` alone (the global RNG is left as it was)."""
    if init not in INITS:
        raise ConfigError(f"search.init: unknown value '{init}'; valid: {', '.join(INITS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create(name, num_classes, image_size=image_size)
        if init == "gaussian":
            torch.manual_seed(seed)
            gaussian_init(model)
    return model.train()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(create, name: str, num_classes: int, image_size: int) -> tuple[int, int]:
    """(parameters, FLOPs per image) of a model, from a build on the meta device: no weights are allocated and no
    arithmetic is done, so a budget can be checked before a candidate is built for real."""
    with torch.device("meta"):
        model = create(name, num_classes, image_size=image_size)
    return count_params(model), count_flops(model, image_size)


def student_seed(seed: int) -> int:
    """The seed every candidate is initialised from: derived from the run's ``seed`` and distinct from
    ``teacher.seed`` values, so a candidate of the teacher's own architecture is not the teacher's copy."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"kdbench-search student {int(seed)}".encode()).digest()[:7], "big")


def count_flops(model: nn.Module, image_size: int, channels: int = 3) -> int:
    """FLOPs of one forward of one ``image_size`` image, counted with forward hooks: every ``Conv2d`` and
    ``Linear`` call, two per multiply-add (what torch's flop counter reports for them; norms, activations and
    pooling are not counted). Runs in eval mode under no_grad; the model's mode is restored."""
    macs = 0

    def conv(module: nn.Conv2d, inputs, output):
        nonlocal macs
        kh, kw = module.kernel_size
        macs += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear(module: nn.Linear, inputs, output):
        nonlocal macs
        macs += output.numel() * module.in_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    parameter = next(model.parameters())
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, image_size, image_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return 2 * macs
