"""DINO into a random teacher (kdbench/methods/dino.py, kdbench/losses/dino.py), pinned to the reference code.

Golden numbers: safelix/dinopl at commit cd39e7801397d0d11004205e3847f67e660b93d4, run on the inputs below
(``dinopl/core.py`` ``DINOHead`` with ``dinopl/modules/{mlp,l2bottleneck,linear}.py``; ``DINO.multicrop_loss_clf``
called with the ``same`` pairing; pytorch_lightning replaced by an empty stand-in, which these classes never use).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdbench.errors import ConfigError
from kdbench.losses import dino_loss
from kdbench.methods import Batch, Progress
from kdbench.methods.dino import DINOHead
from kdbench.models import create_model, run_model
from method_harness import make_context, method_from_config, one_step, assert_gradients_flow, run_step
from kdbench.engine.build import size_method

# dinopl DINOHead(8, 32, hidden_dims=[16, 16], l2bot_dim=4, l2bot_cfg='-/lb/fn/wn/l/-', use_bn=False, act_fn='GELU',
# init_method='trunc_normal').reset_parameters(generator=torch.Generator().manual_seed(7)): per parameter (in the
# reference's order) its sum, |sum| and first three values.
HEAD_PARAMS = [  # (our name, reference name, shape, sum, abs sum, first three)
    ("mlp.0.0.weight", "mlp.layer0.lin.weight", (16, 8), -0.04805625796871027, 1.7858411208362668,
     [0.0017529984470456839, -0.01691807620227337, 0.008206252008676529]),
    ("mlp.0.0.bias", "mlp.layer0.lin.bias", (16,), 0.0, 0.0, [0.0, 0.0, 0.0]),
    ("mlp.1.0.weight", "mlp.layer1.lin.weight", (16, 16), -0.09364038582498324, 4.132455000293703,
     [0.010732642374932766, 0.010365298017859459, -0.017497343942523003]),
    ("mlp.1.0.bias", "mlp.layer1.lin.bias", (16,), 0.0, 0.0, [0.0, 0.0, 0.0]),
    ("bottleneck.weight", "last_layer.lin1.weight", (4, 16), 0.027235862880843342, 1.0379070975704963,
     [0.0032122284173965454, 0.01109848078340292, -0.0011977528920397162]),
    ("bottleneck.bias", "last_layer.lin1.bias", (4,), 0.0, 0.0, [0.0, 0.0, 0.0]),
    ("last_layer.weight", "last_layer.lin2.weight", (32, 4), 0.14904155358090065, 2.1068723526841495,
     [-0.011886011809110641, 0.013727071695029736, -0.00810537114739418]),
]
# its projections of x = torch.linspace(-2, 2, 24).reshape(3, 8): sum, and row 0
HEAD_OUT_SUM = 0.029351298231631517
HEAD_OUT_ROW0 = [-0.015695109963417053, -0.008393866941332817, -0.025621451437473297, -0.028404416516423225,
                 -0.008617802523076534, -0.0031772111542522907, -0.015451247803866863, -0.004834247753024101,
                 0.01677795685827732, 0.01604253239929676, 0.02450137585401535, -0.016876935958862305,
                 0.019835837185382843, 0.026327207684516907, -0.0021867621690034866, 0.03404928743839264,
                 0.022077888250350952, 0.021323516964912415, -0.01816837675869465, -0.008515351451933384,
                 -0.018767669796943665, 0.0217327568680048, 0.03325431048870087, 0.012769785709679127,
                 0.01366877555847168, 0.017124250531196594, -0.022076349705457687, -0.012827466242015362,
                 -0.02832329086959362, -0.004654962569475174, -0.001256042392924428, -0.029530921950936317]
# the random-teacher head on ResNet18's 512-d embedding (configs/cifar10_distillation_v2.json)
FULL_HEAD_PARAMS = 22548736

# DINO.multicrop_loss_clf(pred_logits=s / tau_s, targ_logits=t / tau_t) with loss_pairing 'same' on n crops of
# s = 0.5 sin(0.7 i), t = 0.5 cos(0.3 i) (i = 0..47, shape (2, 4, 6)): its 'CE'
LOSS_CASES = [(1, 1.0, 1.0, 1.8573565483093262), (2, 1.0, 1.0, 1.8754637241363525),
              (1, 0.1, 0.04, 5.763498783111572), (2, 0.1, 0.04, 7.0623016357421875)]


def small_head(seed=7, **kw):
    head = DINOHead(8, 32, hidden_dims=(16, 16), bottleneck_dim=4, **kw)
    head.reset_parameters(torch.Generator().manual_seed(seed))
    return head


def test_head_init_draws_and_layer_order_match_the_reference():
    params = dict(small_head().named_parameters())
    assert list(params) == [row[0] for row in HEAD_PARAMS]
    for name, _, shape, total, absolute, first in HEAD_PARAMS:
        p = params[name].detach()
        assert tuple(p.shape) == shape, name
        assert p.double().sum().item() == pytest.approx(total, abs=1e-9), name
        assert p.double().abs().sum().item() == pytest.approx(absolute, abs=1e-9), name
        assert p.flatten()[:3].tolist() == pytest.approx(first, abs=1e-10), name


def test_head_forward_matches_the_reference():
    """GELU after both hidden layers, L2-normalised bottleneck, and the last layer's raw weight (the reference's
    Linear.forward ignores the weight-normalised matrix it is handed)."""
    out = small_head()(torch.linspace(-2, 2, 24).reshape(3, 8)).detach()
    assert out.shape == (3, 32)
    assert out.double().sum().item() == pytest.approx(HEAD_OUT_SUM, abs=1e-7)
    assert out[0].tolist() == pytest.approx(HEAD_OUT_ROW0, abs=1e-7)


def test_norm_last_layer_uses_unit_rows():
    head, plain = small_head(norm_last_layer=True), small_head()
    x = torch.linspace(-2, 2, 24).reshape(3, 8)
    z = F.normalize(plain.bottleneck(plain.mlp(x)), dim=-1)
    expected = z @ F.normalize(plain.last_layer.weight, dim=-1).T
    assert torch.allclose(head(x), expected, atol=1e-6)
    assert not torch.allclose(head(x), plain(x), atol=1e-6)


def test_full_head_size():
    head = DINOHead(512)
    assert sum(p.numel() for p in head.parameters()) == FULL_HEAD_PARAMS
    assert [tuple(p.shape) for p in head.parameters()] == [(2048, 512), (2048,), (2048, 2048), (2048,), (256, 2048),
                                                           (256,), (65536, 256)]


@pytest.mark.parametrize("crops,s_temp,t_temp,expected", LOSS_CASES)
def test_loss_matches_the_reference(crops, s_temp, t_temp, expected):
    i = torch.arange(48, dtype=torch.float32)
    s, t = (0.5 * torch.sin(0.7 * i)).reshape(2, 4, 6)[:crops], (0.5 * torch.cos(0.3 * i)).reshape(2, 4, 6)[:crops]
    s.requires_grad_(True)
    loss = dino_loss(s, t, student_temp=s_temp, teacher_temp=t_temp)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_loss_is_the_teachers_entropy_when_the_outputs_agree():
    out = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    p = out.softmax(-1)
    assert dino_loss(out, out).item() == pytest.approx(-(p * p.log()).sum(-1).mean().item(), rel=1e-6)


def build_pair(head_init=None, scale=0.0, student="resnet8", teacher="resnet8", student_seed=1, **overrides):
    method = method_from_config("dino", out_dim=64, hidden_dims=[32, 32], bottleneck_dim=16, head_init=head_init,
                                head_init_scale=scale, **overrides)
    torch.manual_seed(0)
    t_model = create_model(teacher, 10).eval().requires_grad_(False)
    torch.manual_seed(student_seed)
    s_model = create_model(student, 10)
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    size_method(method, s_model, t_model, images[:2], make_context(t_model, 10, images, torch.arange(8) % 10, "."))
    return method, s_model, t_model, images


def test_defaults_are_the_reference_v2_config():
    method = method_from_config("dino")
    assert method.hparams() == {"out_dim": 65536, "hidden_dims": [2048, 2048], "bottleneck_dim": 256,
                                "norm_last_layer": False, "student_temp": 1.0, "teacher_temp": 1.0,
                                "dino_weight": 1.0, "head_init": None, "head_init_scale": 0.0}
    assert method.needs == {"embedding"} and not method.task_terms


def test_teacher_head_is_frozen_a_function_of_the_teacher_and_never_checkpointed():
    method, _, t_model, _ = build_pair()
    again, *_ = build_pair(student_seed=5)  # another student: the same teacher, the same heads
    for (name, a), b in zip(method.teacher_head.named_buffers(), again.teacher_head.buffers()):
        assert torch.equal(a, b), name
    assert not any(k.startswith("teacher_head") for k in method.state_dict())
    assert not list(method.teacher_head.parameters())
    assert {n.split(".")[0] for n, _ in method.named_parameters()} == {"student_head"}
    # the student's own head is another draw (head_init null: the reference's s_init=random)
    assert not torch.equal(method.student_head.last_layer.weight, method.teacher_head.last_layer.weight)


def test_head_starts_equal_to_the_teachers_with_an_equal_student():
    method, s_model, t_model, images = build_pair(head_init="equal")
    for (name, p), b in zip(method.student_head.named_parameters(), method.teacher_head.buffers()):
        assert torch.equal(p, b), name
    s_model.load_state_dict(t_model.state_dict())
    s_model.eval()  # same BN statistics as the teacher: the outputs agree, the loss is the teacher's entropy
    terms = method(run_model(s_model, images, {"embedding"}), run_model(t_model, images, {"embedding"}),
                   Batch(images, torch.zeros(8, dtype=torch.long), torch.arange(8)), Progress(1, 1, 0, 1))
    t_out = method.teacher_head(run_model(t_model, images, {"embedding"}).embedding)
    p = t_out.softmax(-1)
    assert terms["dino"].item() == pytest.approx(-(p * p.log()).sum(-1).mean().item(), rel=1e-5)


@pytest.mark.parametrize("how,scale", [("neighborhood", 0.3), ("interpolated_vp", 0.25)])
def test_head_starts_from_the_teachers_as_the_encoder_does(how, scale):
    from kdbench.models.mixing import mix_from_teacher

    method, *_ = build_pair(head_init=how, scale=scale)
    null, *_ = build_pair()  # the same generator: its student head is the own draw the mix used
    teacher, drawn = dict(method.teacher_head.named_buffers()), dict(null.student_head.named_parameters())
    for name, p in method.student_head.named_parameters():
        assert torch.equal(p, mix_from_teacher(teacher[name], drawn[name], how, scale)), name


def test_one_step_trains_the_student_and_its_head_never_the_teacher(tmp_path):
    method = method_from_config("dino", out_dim=256, hidden_dims=[64, 64], bottleneck_dim=32)
    result = one_step(method, tmp_path, teacher="resnet8", student="resnet8")
    assert set(result.terms) == {"dino"}
    assert_gradients_flow(result)
    assert all(p.grad is not None for p in method.student_head.parameters())


def test_refusals_are_one_line():
    with pytest.raises(ConfigError, match=r"^method\.head_init: unknown value 'copy'; valid: equal, "):
        method_from_config("dino", head_init="copy")
    with pytest.raises(ConfigError, match=r"^method\.head_init_scale: interpolated takes an alpha in \[0, 1\], got 1\.5$"):
        method_from_config("dino", head_init="interpolated", head_init_scale=1.5)
    with pytest.raises(ConfigError, match=r"^method\.head_init: equal starts the student's head from the teacher's, "
                                          r"which needs equal embedding widths \(student 64, teacher 256\)"):
        build_pair(head_init="equal", student="resnet8", teacher="resnet8x4")
    with pytest.raises(ConfigError, match=r"^method\.student_temp: must be > 0, got 0\.0$"):
        method_from_config("dino", student_temp=0.0)
