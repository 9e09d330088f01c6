"""kdbench/methods/mealv2.py and kdbench/losses/mealv2.py: MEAL V2 pinned to the reference code; its ImageNet
preset. Gradients, teacher and checkpoint state on the zoo pairs: tests/test_methods_contract.py.

Golden values were computed by running the reference code itself, szq0214/MEAL-V2 @
59e6bca29c77a7df9229e77d4463f2f795723810, on the float64 inputs below:
  - extensions/teacher_wrapper.py ``ModelDistillationWrapper`` (train mode, ``forward(x, before=True)``) around
    modules that return the fixed student logits S and teacher logits T[k]: the soft label (mean of the softmaxes)
    and the teachers' mean logits;
  - extensions/kd_loss.py ``KLLoss`` (train mode) on (student output, soft label): the similarity loss;
  - loss.py ``discriminatorLoss(D)([output], [mean logits])`` with models/discriminator.py
    ``Discriminator(outputs_size=1000, K=8)`` in float64, its weights the ``big_weights()`` below (the same
    state_dict loaded into both); the sum ``KLLoss + discriminatorLoss`` was backpropagated for the gradients.
The reference builds its BCE target as a float32 tensor, so its discriminator loss comes back as float32: those
numbers are compared at 1e-7; everything else at float64 precision.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config
from method_harness import method_from_config
from omegaconf import OmegaConf

from kdbench.errors import ConfigError
from kdbench.losses import mealv2_discriminator_loss, mealv2_loss, mealv2_soft_target
from kdbench.methods import METHODS, BuildContext, method_kwargs
from kdbench.methods.mealv2 import MEALV2, LogitDiscriminator, discriminator_widths
from kdbench.models import ModelOutput, create_model

F64 = torch.float64

S = [[-2.25, -2.30, -0.50, -0.87, 1.70, 1.38, -0.63], [-4.23, 0.64, -2.53, 0.70, 0.62, 0.24, 2.48],
     [2.23, -0.49, -2.71, -3.39, 1.13, 0.50, 0.88]]
T = [[[0.53, -0.69, -1.18, 1.63, -1.19, 0.62, -1.35], [-1.72, 10.23, -4.59, -3.70, 5.46, -1.65, -3.98],
      [0.57, -0.21, 3.87, -4.43, 7.70, 3.12, 1.07]],
     [[-0.01, -1.60, 3.51, 1.18, 5.82, 2.37, 0.10], [2.13, -4.61, -1.24, 2.90, 4.87, -1.10, -3.91],
      [1.05, 4.60, -2.94, -3.17, 2.41, 0.17, -2.40]],
     [[0.22, 1.28, 0.88, -0.43, -1.49, 1.13, 0.11], [-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
      [3.3, -3.3, 0.4, 0.0, -0.4, 2.2, 1.1]]]
# Discriminator scores (2B = 6 rows, student rows first) for the BCE alone.
SCORES = [[0.0, 1.2], [0.3, 0.0], [2.5, 0.7], [0.0, 0.0], [1.1, 0.4], [0.05, 3.0]]


def big_inputs(batch: int = 4, classes: int = 1000, members: int = 2):
    """Student logits (B, C) and teacher logits (K, B, C) on 1000 classes, from closed formulas."""
    b = torch.arange(batch, dtype=F64)[:, None]
    c = torch.arange(classes, dtype=F64)[None, :]
    s = 3 * torch.sin(0.37 * c + 1.1 * b) * torch.cos(0.011 * c * (b + 1))
    t = [4 * torch.cos(0.23 * c * (k + 1) + 0.9 * b) + 6.0 * (c == 17 * b + 5 * k).to(F64) for k in range(members)]
    return s, torch.stack(t)


def big_weights() -> dict[str, torch.Tensor]:
    """A state_dict for the 1000 -> 125 -> 15 -> 2 discriminator (the reference's and ours: same keys and shapes)."""
    def grid(rows, cols):
        return torch.arange(rows, dtype=F64)[:, None], torch.arange(cols, dtype=F64)[None, :]

    o, i = grid(125, 1000)
    w1, b1 = 0.04 * torch.sin(0.7 * o + 0.31 * i + 0.5), 0.05 * torch.cos(torch.arange(125, dtype=F64))
    o, i = grid(15, 125)
    w2, b2 = 0.1 * torch.sin(1.3 * o + 0.17 * i), 0.1 * torch.sin(torch.arange(15, dtype=F64) + 1) + 0.05
    o, i = grid(2, 15)
    w3, b3 = 0.3 * torch.cos(0.9 * o + 0.5 * i + 0.2), torch.tensor([0.2, 0.1], dtype=F64)
    return {"conv1.weight": w1[:, :, None, None], "conv1.bias": b1, "conv2.weight": w2[:, :, None, None],
            "conv2.bias": b2, "conv3.weight": w3[:, :, None, None], "conv3.bias": b3}


def reference_method() -> MEALV2:
    method = MEALV2()
    method.discriminator = LogitDiscriminator(1000).double()
    method.discriminator.load_state_dict(big_weights())
    return method


# --------------------------------------------------------------------------- the losses

@pytest.mark.parametrize("members, expected", [
    (1, 2.3961532187163352),  # one teacher: ModelDistillationWrapper with teachers [T0]
    (2, 2.3048028902554054),
    (3, 2.183594297283572),
])
def test_similarity_loss_matches_reference(members, expected):
    s, t = torch.tensor(S, dtype=F64), torch.tensor(T, dtype=F64)[:members]
    assert mealv2_loss(s, t).item() == pytest.approx(expected, rel=1e-14)


def test_soft_target_averages_probabilities_not_logits():
    t = torch.tensor(T, dtype=F64)
    q = mealv2_soft_target(t)
    assert torch.allclose(q, torch.stack([F.softmax(x, dim=1) for x in t]).mean(0), rtol=0, atol=1e-15)
    assert torch.allclose(q.sum(1), torch.ones(3, dtype=F64))
    assert (q - F.softmax(t.mean(0), dim=1)).abs().max() > 0.1  # not the softmax of the mean logits
    # the loss is a cross-entropy: KL(q || p_s) plus the entropy of q, and it never looks at labels
    s = torch.tensor(S, dtype=F64)
    kl = F.kl_div(F.log_softmax(s, 1), q, reduction="batchmean")
    entropy = -(q * q.log()).sum(1).mean()
    assert mealv2_loss(s, t).item() == pytest.approx((kl + entropy).item(), rel=1e-12)


def test_discriminator_loss_matches_reference():
    # loss.py discriminatorLoss with a discriminator that returns SCORES: float32 target, float32 result
    assert mealv2_discriminator_loss(torch.tensor(SCORES, dtype=F64)).item() == \
        pytest.approx(0.7199749946594238, rel=1e-7)
    scores = torch.tensor(SCORES, dtype=F64)
    target = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3, dtype=F64)
    assert mealv2_discriminator_loss(scores).item() == \
        pytest.approx(F.binary_cross_entropy_with_logits(scores, target).item(), rel=1e-15)


def test_loss_shape_errors():
    s, t = torch.tensor(S, dtype=F64), torch.tensor(T, dtype=F64)
    with pytest.raises(ValueError, match="member_logits must be"):
        mealv2_loss(s, t[0])
    with pytest.raises(ValueError, match="scores must be"):
        mealv2_discriminator_loss(torch.zeros(5, 2))


def test_half_precision_logits_are_scored_in_float32():
    s, t = torch.tensor(S), torch.tensor(T)
    assert mealv2_loss(s.bfloat16(), t.bfloat16()).dtype == torch.float32
    assert mealv2_discriminator_loss(torch.tensor(SCORES).bfloat16()).dtype == torch.float32


# --------------------------------------------------------------------------- the discriminator

def test_discriminator_widths_as_the_reference_at_1000_classes():
    assert discriminator_widths(1000) == (1000, 125, 15, 2)
    d = LogitDiscriminator(1000)
    assert sum(p.numel() for p in d.parameters()) == 127047  # the reference's Discriminator(1000, K=8)
    assert {k: tuple(v.shape) for k, v in d.state_dict().items()} == {k: tuple(v.shape) for k, v in big_weights().items()}
    # other class counts: the same divisions, hidden widths floored at the reference's narrowest (15)
    assert discriminator_widths(960) == (960, 120, 15, 2)
    assert discriminator_widths(100) == (100, 15, 15, 2)
    assert discriminator_widths(10) == (10, 15, 15, 2)
    assert discriminator_widths(1000, reduction=2) == (1000, 500, 250, 2)


def test_discriminator_scores_match_reference():
    s, t = big_inputs()
    d = reference_method().discriminator
    scores = d(torch.cat([s, t.mean(0)]))
    assert scores.shape == (8, 2) and (scores >= 0).all()  # ReLU after the last layer too
    assert scores[0].tolist() == pytest.approx([0.35279478609474790, 0.13480474294594708], rel=1e-13)
    assert scores[3].tolist() == pytest.approx([0.67435394749972355, 0.21299061054455648], rel=1e-13)
    assert scores[7].tolist() == pytest.approx([0.32500037737186466, 0.11215389467447144], rel=1e-13)


# --------------------------------------------------------------------------- the method, whole

def test_method_terms_and_gradients_match_reference():
    s, t = big_inputs()
    method = reference_method()
    student = s.clone().requires_grad_(True)
    terms = method(ModelOutput(logits=student), ModelOutput(logits=t.mean(0), member_logits=t), None, None)
    assert list(terms) == ["sim", "disc"]  # no hard-label term
    assert terms["sim"].item() == pytest.approx(7.917620709757198, rel=1e-14)
    assert terms["disc"].item() == pytest.approx(0.6944013237953186, rel=1e-7)
    assert sum(terms.values()).item() == pytest.approx(8.612022033552517, rel=1e-7)
    sum(terms.values()).backward()
    grad = student.grad
    assert grad.abs().sum().item() == pytest.approx(1.3398049981401368, rel=1e-12)
    assert grad[0, :4].tolist() == pytest.approx([-0.08328247571636814, -0.0003163777643200752,
                                                  0.0004334418415125118, 0.0012462578580806798], rel=1e-12)
    assert grad[3, 56].item() == pytest.approx(0.0006753701002928728, rel=1e-12)
    expected = {"conv1.weight": 237.67139186141344, "conv1.bias": 0.12672708657744633,
                "conv2.weight": 10.62824848443745, "conv2.bias": 0.12190393766591745,
                "conv3.weight": 0.48964897123042384, "conv3.bias": 0.06220361162898797}
    for name, p in method.discriminator.named_parameters():
        assert p.grad.abs().sum().item() == pytest.approx(expected[name], rel=1e-12), name


def test_config_defaults_and_declarations():
    method = method_from_config("mealv2")
    assert isinstance(method, MEALV2) and METHODS["mealv2"] is MEALV2
    assert method.hparams() == {"sim_weight": 1.0, "disc_weight": 1.0, "reduction": 8}
    assert MEALV2.needs_of("student") == {"logits"}
    assert MEALV2.needs_of("teacher") == {"logits", "member_logits"}
    assert MEALV2.task_terms == frozenset() and MEALV2.uses_teacher
    cfg = OmegaConf.create({"_target_": "kdbench.methods.mealv2.MEALV2", "name": "mealv2", "reduction": 0})
    with pytest.raises(ConfigError, match=r"method.reduction: must be >= 1, got 0"):
        method_kwargs(cfg)


def _context(classes: int) -> BuildContext:
    return BuildContext(num_classes=classes, train_targets=torch.zeros(4, dtype=torch.long),
                        device=torch.device("cpu"), teacher=None, teacher_fingerprint=None, cache_dir=None,
                        plain_train_batches=lambda: iter(()))


def test_build_sizes_the_discriminator_from_the_logits_and_weight_zero_builds_none():
    logits = torch.zeros(2, 100)
    teacher = ModelOutput(logits=logits, member_logits=logits[None])
    method = MEALV2()
    method.build(ModelOutput(logits=logits), teacher, _context(100))
    assert [m.out_channels for m in (method.discriminator.conv1, method.discriminator.conv2,
                                     method.discriminator.conv3)] == [15, 15, 2]
    plain = MEALV2(disc_weight=0.0)
    plain.build(ModelOutput(logits=logits), teacher, _context(100))
    assert plain.discriminator is None and not list(plain.parameters())
    s, t = torch.tensor(S, dtype=F64), torch.tensor(T, dtype=F64)
    terms = plain(ModelOutput(logits=s), ModelOutput(logits=t.mean(0), member_logits=t), None, None)
    assert list(terms) == ["sim"] and terms["sim"].item() == pytest.approx(2.183594297283572, rel=1e-14)
    with pytest.raises(ConfigError, match="member_logits"):
        MEALV2().build(ModelOutput(logits=logits), ModelOutput(logits=logits), _context(100))


def test_on_a_teacher_ensemble_the_target_is_the_members_mean_probability():
    from kdbench.models import ensemble
    from kdbench.models.outputs import run_model

    torch.manual_seed(0)
    members = [create_model(name, 10, image_size=32).eval() for name in ("resnet8", "resnet14")]
    teacher = ensemble.TeacherEnsemble(members, combine="probs").requires_grad_(False)
    student = create_model("resnet8", 10, image_size=32)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        t_out = run_model(teacher, x, MEALV2.needs_of("teacher"))
        own = torch.stack([m(x) for m in members])
    assert t_out.member_logits.shape == (2, 4, 10) and torch.allclose(t_out.member_logits, own)
    method = MEALV2()
    s_out = run_model(student, x, MEALV2.needs_of("student"))
    method.build(s_out, t_out, _context(10))
    terms = method(s_out, t_out, None, None)
    expected = -(torch.stack([F.softmax(z, 1) for z in own]).mean(0) * F.log_softmax(s_out.logits, 1)).sum(1).mean()
    assert terms["sim"].item() == pytest.approx(expected.item(), rel=1e-6)
    # combine=probs: the ensemble's own logits are the log of that same mean probability
    assert torch.allclose(F.softmax(t_out.logits, 1), mealv2_soft_target(own), atol=1e-6)
    assert math.isfinite(terms["disc"].item())


# --------------------------------------------------------------------------- the ImageNet preset

def _compose(*overrides: str):
    return compose_config("experiment=imagenet/mealv2_r50", *overrides)


def test_imagenet_preset_is_the_readme_command():
    from kdbench.cli import validate

    cfg = _compose()
    validate(cfg, check_files=False)
    assert (cfg.dataset.name, cfg.dataset.image_size, cfg.dataset.augment) == ("imagenet", 224, "imagenet")
    assert cfg.method.name == "mealv2"
    # --teacher-model gluon_senet154,gluon_resnet152_v1s, pretrained, mean of the softmaxes
    assert cfg.teacher.name == "ensemble" and list(cfg.teacher.members) == ["senet154.gluon_in1k", "resnet152s.gluon_in1k"]
    assert cfg.teacher.combine == "probs" and cfg.teacher.pretrained is True
    # --model resnet50 from timm 0.2.1's pretrained weights (resnet50_ram-a26f946b.pth)
    assert (cfg.student.name, cfg.student.pretrained) == ("resnet50.ram_in1k", True)
    # --batch-size 512 --epochs 180; SGD momentum 0.9, weight decay 0, lr 0.01 then 0.001
    assert (cfg.trainer.epochs, cfg.trainer.batch_size) == (180, 512)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.nesterov) == \
        ("sgd", 0.01, 0.9, 0.0, False)
    assert (cfg.optim.schedule, list(cfg.optim.milestones), cfg.optim.gamma, cfg.optim.warmup_epochs) == \
        ("multistep", [101], 0.1, 0)
    # another method on the same recipe: the command line wins over the preset's method
    assert _compose("method=kd").method.name == "kd"


def test_imagenet_preset_schedule_is_the_reference_lr_regime():
    """models/model_factory.py LR_REGIME [0, 100, 0.01, 101, 300, 0.001] read by train.py LearningRateRegime
    (inclusive, 0-based epochs): 0.01 for epochs 0..100, 0.001 from 101 on."""
    from kdbench.engine.optim import build_scheduler

    cfg = _compose()
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(cfg.optim.lr))
    scheduler = build_scheduler(cfg.optim, optimizer, int(cfg.trainer.epochs))
    lrs = []
    for _ in range(int(cfg.trainer.epochs)):  # the lr each epoch trains with; the schedule steps after it
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    reference = [0.01 if 0 <= epoch <= 100 else 0.001 for epoch in range(180)]
    assert lrs == pytest.approx(reference, rel=1e-12)


def test_imagenet_preset_models_are_what_timm_makes_of_the_reference_names():
    import timm
    from timm.models import get_deprecated_models, get_pretrained_cfg

    deprecated = get_deprecated_models()
    assert deprecated["gluon_senet154"] == "senet154.gluon_in1k"
    assert deprecated["gluon_resnet152_v1s"] == "resnet152s.gluon_in1k"
    # the same files timm 0.2.1 loaded for gluon_senet154, gluon_resnet152_v1s and resnet50
    assert get_pretrained_cfg("senet154.gluon_in1k").url.endswith("/gluon_senet154-70a1a3c0.pth")
    assert get_pretrained_cfg("resnet152s.gluon_in1k").url.endswith("/gluon_resnet152_v1s-dcc41b81.pth")
    assert get_pretrained_cfg("resnet50.ram_in1k").url.endswith("/resnet50_ram-a26f946b.pth")
    assert all(timm.is_model(n) for n in ("senet154.gluon_in1k", "resnet152s.gluon_in1k", "resnet50.ram_in1k"))
