"""kdbench/methods/dist.py, taid.py, ofa.py and mixkd.py: losses pinned to the reference code, schedules, mixing,
OFA's branches (on a timm student too). Gradients, teacher and checkpoint state on the zoo pairs:
tests/test_methods_contract.py.

Golden values were computed by running the reference code itself on the fixed float64 inputs below
(S, T, Y; plus P and LAM for MIX-KD):
  DIST   hunto/image_classification_sota @ 6f7a70a1dd57fd88413d83909d3d53243068f701,
         lib/models/losses/dist_kd.py: DIST(beta, gamma, tau)(S, T)
  TAID   SakanaAI/TAID @ a0628922c16169d1fca10ddf61849e0693289cf8, src/distil_losses/taid.py: TAID.compute_loss
         with an all-ones mask, and TAID.update_t over a fixed loss sequence (buffers on the CPU)
  OFA    Hao840/OFAKD @ f7bb896cac9879040800bde08a8cc2057a904c52, distillers/ofa.py: ofa_loss(S, T,
         one_hot(Y), eps, temperature), and the parameter counts of OFA.projector built by OFA.__init__
  MIX-KD hchoi71/MIX-KD @ 6e8c149bd5f405c33d1874eef793c7aed0588fd0, distiller_zoo/MIXSTD.py:
         MIXSTDLoss(gamma=1, alpha=1)(S, T, LAM * one_hot(Y) + (1 - LAM) * one_hot(P))
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from method_harness import assert_gradients_flow, method_from_config, one_step

from kdbench.errors import ConfigError
from kdbench.losses import dist_loss, mixkd_loss, ofa_loss, taid_loss
from kdbench.losses.mixkd import mixkd_cross_entropy
from kdbench.methods import Batch, BuildContext, Progress
from kdbench.methods.mixkd import MixedBatch
from kdbench.models import ModelOutput

F64 = torch.float64

S = [[-2.25, -2.30, -0.50, -0.87, 1.70, 1.38, -0.63], [-4.23, 0.64, -2.53, 0.70, 0.62, 0.24, 2.48],
     [2.23, -0.49, -2.71, -3.39, 1.13, 0.50, 0.88], [0.22, 1.28, 0.88, -0.43, -1.49, 1.13, 0.11],
     [1.05, 4.60, -2.94, -3.17, 2.41, 0.17, -2.40]]
T = [[0.53, -0.69, -1.18, 1.63, -1.19, 0.62, -1.35], [-1.72, 10.23, -4.59, -3.70, 5.46, -1.65, -3.98],
     [0.57, -0.21, 3.87, -4.43, 7.70, 3.12, 1.07], [-0.01, -1.60, 3.51, 1.18, 5.82, 2.37, 0.10],
     [2.13, -4.61, -1.24, 2.90, 4.87, -1.10, -3.91]]
Y = [4, 1, 0, 2, 1]
P = [0, 3, 0, 5, 6]  # mix partners' labels
LAM = [1.0, 0.3, 1.0, 0.65, 0.8]  # weight of Y in each mixed sample



def inputs():
    return torch.tensor(S, dtype=F64), torch.tensor(T, dtype=F64), torch.tensor(Y)


def progress(step=0, epoch=1, epochs=10, steps_per_epoch=10):
    return Progress(epoch=epoch, epochs=epochs, step=step, steps_per_epoch=steps_per_epoch)


def round_trip(state: dict) -> dict:
    """The engine's checkpoint path: torch.save then torch.load."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


CROSS_FAMILY = [("resnet32x4", "resnet8x4"), ("wrn_40_2", "MobileNetV2"), ("resnet32x4", "ShuffleV2")]


# --------------------------------------------------------------------------- DIST

@pytest.mark.parametrize("kwargs, expected", [
    ({}, 32.632974459667494),  # CIFAR default: beta 1, gamma 1, T 4 (DIST(1, 1, 4))
    ({"temperature": 1.0}, 2.1433194602070182),  # ImageNet setting (DIST(1, 1, 1))
    ({"beta": 2.0, "gamma": 0.5}, 41.96969523188531),  # DIST(2, 0.5, 4)
])
def test_dist_loss_matches_reference(kwargs, expected):
    s, t, _ = inputs()
    assert dist_loss(s, t, **kwargs).item() == pytest.approx(expected, rel=1e-12)


def test_dist_loss_vanishes_for_identical_logits_and_ignores_the_teacher_gradient():
    s, t, _ = inputs()
    assert 0.0 <= dist_loss(s, s).item() < 1e-4  # not exactly 0: the 1e-8 in the correlation's denominator
    t.requires_grad_(True)
    s.requires_grad_(True)
    dist_loss(s, t).backward()
    assert t.grad is None and s.grad.abs().sum() > 0


def test_dist_method_weights_its_terms():
    s, t, y = inputs()
    method = method_from_config("dist")
    assert method.hparams() == {"ce_weight": 1.0, "kd_weight": 2.0, "beta": 1.0, "gamma": 1.0, "temperature": 4.0}
    terms = method(ModelOutput(s), ModelOutput(t), Batch(torch.zeros(5, 3, 2, 2), y, torch.arange(5)), progress())
    assert set(terms) == {"ce", "dist"}
    assert terms["dist"].item() == pytest.approx(2.0 * 32.632974459667494, rel=1e-12)
    assert torch.allclose(terms["ce"], F.cross_entropy(s, y))


# --------------------------------------------------------------------------- TAID

@pytest.mark.parametrize("t_value, expected", [(0.4, 2.1084036827087402), (0.75, 2.524998426437378)])
def test_taid_loss_matches_reference(t_value, expected):
    s, t, _ = inputs()
    # The reference softmaxes in float32, so it agrees with this float64 evaluation to float32 rounding.
    assert taid_loss(s, t, t=t_value).item() == pytest.approx(expected, rel=1e-6)
    assert taid_loss(s, t, t=torch.tensor(t_value)).item() == pytest.approx(expected, rel=1e-6)


def test_taid_target_is_detached_and_interpolates_from_student_to_teacher():
    s, t, _ = inputs()
    assert taid_loss(s, t, t=1.0).item() == pytest.approx(-(F.softmax(t, 1) * F.log_softmax(s, 1)).sum(1).mean().item())
    assert taid_loss(s, t, t=0.0).item() == pytest.approx(-(F.softmax(s, 1) * F.log_softmax(s, 1)).sum(1).mean().item())
    s.requires_grad_(True)
    taid_loss(s, t, t=0.4).backward()
    mixed = F.softmax(0.6 * s.detach() + 0.4 * t, 1)
    assert torch.allclose(s.grad, (F.softmax(s.detach(), 1) - mixed) / 5)  # target gets no gradient


LOSS_SEQUENCE = [2.0, 1.8, 1.9, 1.5, 1.2, 1.25, 1.0]


@pytest.mark.parametrize("alpha, total, expected", [
    # TAID(alpha=0.3).update_t(loss_k, global_step=k, num_train_steps=100): the adaptive step dominates
    (0.3, 100, [0.4000000059604645, 0.4900450110435486, 0.5665549039840698, 0.6316540837287903,
                0.687030553817749, 0.7340710163116455, 0.7740801572799683]),
    # TAID().update_t(loss_k, global_step=k, num_train_steps=10): the linear target dominates
    (5e-4, 10, [0.4000000059604645, 0.46000000834465027, 0.5199999809265137, 0.5799999833106995,
                0.6399999856948853, 0.699999988079071, 0.7599999904632568]),
])
def test_taid_schedule_matches_reference(alpha, total, expected):
    method = method_from_config("taid", alpha=alpha)
    trajectory = []
    for step, loss in enumerate(LOSS_SEQUENCE):
        method.advance(torch.tensor(loss), step, total)
        trajectory.append(method.t.item())
    assert trajectory == pytest.approx(expected, abs=1e-7)
    assert method.momentum.item() == pytest.approx(0.006007760763168335, abs=1e-9)  # reference, both cases
    assert method.prev_loss.item() == 1.0


def test_taid_without_adaptation_follows_the_linear_target():
    method = method_from_config("taid", adaptive=False, alpha=0.9)
    for step, loss in enumerate(LOSS_SEQUENCE):
        method.advance(torch.tensor(loss), step, 20)
    assert method.t.item() == pytest.approx(0.4 + 0.6 * 6 / 20, abs=1e-7)


def test_taid_uses_t_then_advances_it_per_training_step():
    s, t, y = inputs()
    batch = Batch(torch.zeros(5, 3, 2, 2), y, torch.arange(5))
    method = method_from_config("taid")
    assert method.hparams() == {"t_start": 0.4, "t_end": 1.0, "alpha": 5e-4, "beta": 0.99, "adaptive": True,
                                "ce_weight": 0.0, "taid_weight": 1.0}
    method.train()
    terms = method(ModelOutput(s), ModelOutput(t), batch, progress(step=0, epochs=2, steps_per_epoch=5))
    assert set(terms) == {"ce", "taid"} and terms["ce"].item() == 0.0
    assert terms["taid"].item() == pytest.approx(2.1084036827087402, rel=1e-6)
    assert method.t.item() == pytest.approx(0.4) and method.prev_loss.item() == pytest.approx(2.1084036827087402, rel=1e-6)
    method(ModelOutput(s), ModelOutput(t), batch, progress(step=5, epochs=2, steps_per_epoch=5))
    assert method.t.item() == pytest.approx(0.4 + 0.6 * 5 / 10, abs=1e-6)  # step 5 of 2 x 5
    method.eval()
    before = method.t.clone()
    method(ModelOutput(s), ModelOutput(t), batch, progress(step=9, epochs=2, steps_per_epoch=5))
    assert torch.equal(method.t, before)


@pytest.mark.parametrize("teacher, student", CROSS_FAMILY[::2])
def test_taid_remembers_the_loss_of_an_engine_step(tmp_path, teacher, student):
    result = one_step(method_from_config("taid"), tmp_path, teacher=teacher, student=student)
    assert result.method.prev_loss.item() == pytest.approx(result.terms["taid"].item())


# --------------------------------------------------------------------------- OFA-KD

@pytest.mark.parametrize("eps, temperature, expected", [
    (1.0, 1.0, 2.7918998877387073),  # CIFAR-100 eps
    (1.5, 1.0, 2.627615174540132),  # ImageNet example eps
    (1.0, 2.0, 2.1803847856317273),
])
def test_ofa_loss_matches_reference(eps, temperature, expected):
    s, t, y = inputs()
    assert ofa_loss(s, t, y, eps=eps, temperature=temperature).item() == pytest.approx(expected, rel=1e-12)


def _probe(shapes, width):
    return ModelOutput(logits=torch.zeros(2, 100), embedding=torch.zeros(2, width),
                       stages=[torch.zeros(2, *shape) for shape in shapes])


def _context(num_classes=100):
    return BuildContext(num_classes=num_classes, train_targets=torch.zeros(4, dtype=torch.long),
                        device=torch.device("cpu"), teacher=None, teacher_fingerprint=None, cache_dir=None,
                        plain_train_batches=lambda: iter(()))


def test_ofa_branches_match_the_reference_projectors():
    # timm resnet18 student at 224 px (stem, layer1..4) with a 2048-wide teacher embedding and 100 classes;
    # the reference's OFA.projector for --ofa-stage 1 2 3 4 has these parameter counts per stage.
    student = _probe([(64, 112, 112), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)], 512)
    teacher = ModelOutput(logits=torch.zeros(2, 100), embedding=torch.zeros(2, 2048))
    method = method_from_config("ofa")
    method.build(student, teacher, _context())
    counts = {k: sum(p.numel() for p in branch.parameters()) for k, branch in method.branches.items()}
    assert counts == {"1": 869988, "2": 856164, "3": 803940, "4": 1255524}
    assert method.branches["1"](torch.randn(2, 64, 56, 56)).shape == (2, 100)


def test_ofa_branch_stage_selection():
    student = _probe([(32, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8)], 256)
    teacher = ModelOutput(logits=torch.zeros(2, 100), embedding=torch.zeros(2, 256))
    method = method_from_config("ofa", branch_stages="2, 3")
    method.build(student, teacher, _context())
    assert list(method.branches) == ["2", "3"]
    assert isinstance(method.branches["3"][0], torch.nn.Conv2d)  # last stage: a 1x1 convolution
    with pytest.raises(ConfigError, match="method.branch_stages"):
        method_from_config("ofa", branch_stages="4").build(student, teacher, _context())


def test_ofa_method_terms():
    torch.manual_seed(0)
    s, t, y = inputs()
    s, t = s.float(), t.float()
    student = ModelOutput(s, torch.zeros(5, 16), [torch.randn(5, 8, 8, 8), torch.randn(5, 16, 4, 4)])
    method = method_from_config("ofa")
    assert method.hparams() == {"ce_weight": 1.0, "kd_weight": 1.0, "ofa_weight": 1.0, "eps": 1.0,
                                "temperature": 1.0, "label_smoothing": 0.1, "branch_stages": "all"}
    method.build(student, ModelOutput(t, torch.zeros(5, 32)), _context(num_classes=7))
    terms = method(student, ModelOutput(t), Batch(torch.zeros(5, 3, 2, 2), y, torch.arange(5)), progress())
    assert set(terms) == {"ce", "ofa", "ofa_branches"}
    assert terms["ofa"].item() == pytest.approx(2.7918998877387073, rel=1e-6)
    assert torch.allclose(terms["ce"], F.cross_entropy(s, y, label_smoothing=0.1))
    branch_logits = method.branches["1"](student.stages[1])
    assert torch.allclose(terms["ofa_branches"], ofa_loss(branch_logits, t, y))


@pytest.mark.parametrize("teacher, student", CROSS_FAMILY[:2])
def test_ofa_branches_on_zoo_students(tmp_path, teacher, student):
    result = one_step(method_from_config("ofa"), tmp_path, teacher=teacher, student=student)
    assert len(result.method.branches) == {"resnet8x4": 3, "MobileNetV2": 4}[student]  # every stage after the stem


def test_ofa_on_a_timm_student_and_its_state_round_trips(tmp_path):
    # the contract runs zoo pairs only: a timm student's branches, gradients and state are checked here
    result = one_step(method_from_config("ofa"), tmp_path, teacher="resnet8x4", student="resnet10t", image_size=32)
    assert result.student.kdbench_name == "resnet10t"  # timm's model, not the CIFAR zoo
    assert_gradients_flow(result)
    assert list(result.method.branches) == ["1", "2", "3", "4"]
    fresh = one_step(method_from_config("ofa"), tmp_path, teacher="resnet8x4", student="resnet10t", seed=1).method
    state = round_trip(result.method.state_dict())
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())
    fresh.load_state_dict(state)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())


# --------------------------------------------------------------------------- MIX-KD

def test_mixkd_losses_match_reference():
    s, t, y = inputs()
    lam = torch.tensor(LAM, dtype=F64).unsqueeze(1)
    soft = lam * F.one_hot(y, 7).to(F64) + (1 - lam) * F.one_hot(torch.tensor(P), 7).to(F64)
    assert mixkd_cross_entropy(s, soft).item() == pytest.approx(1.3470393376644938, rel=1e-12)
    assert mixkd_loss(s, t).item() == pytest.approx(0.8271386486344223, rel=1e-12)


def test_mixkd_method_builds_soft_targets_from_the_mixed_batch():
    s, t, y = inputs()
    batch = MixedBatch(torch.zeros(5, 3, 2, 2), y, torch.arange(5), {}, partner_targets=torch.tensor(P),
                       lam=torch.tensor(LAM, dtype=F64))
    method = method_from_config("mixkd")
    assert method.hparams() == {"ce_weight": 0.1, "kd_weight": 0.9, "partial": True, "keep_fraction": 0.9,
                                "mixup_alpha": 1.0}
    terms = method(ModelOutput(s), ModelOutput(t), batch, progress())
    # MIXSTDLoss(gamma=0.1, alpha=0.9) on the same inputs: (0.1347039337664494, 0.7444247837709801)
    assert terms["ce"].item() == pytest.approx(0.1347039337664494, rel=1e-12)
    assert terms["mixkd"].item() == pytest.approx(0.7444247837709801, rel=1e-12)


def _labelled_batch(n=16):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return Batch(images, torch.arange(n), torch.arange(n) + 100)


@pytest.mark.parametrize("partial", [True, False])
def test_mixkd_prepare_mixes_pairs_with_the_global_generator(partial):
    n = 16
    method = method_from_config("mixkd", partial=partial)
    torch.manual_seed(3)
    mixed = method.prepare(_labelled_batch(n), progress())
    p1, p2, lam = mixed.targets, mixed.partner_targets, mixed.lam  # labels are the sample numbers here
    assert sorted(p1.tolist()) == list(range(n)) and sorted(p2.tolist()) == list(range(n))
    assert torch.equal(mixed.index, p1 + 100)
    expected = lam.view(-1, 1, 1, 1) * p1.float().view(-1, 1, 1, 1) + (1 - lam.view(-1, 1, 1, 1)) * p2.float().view(-1, 1, 1, 1)
    assert torch.allclose(mixed.images, expected.expand(n, 3, 4, 4))
    unmixed = int((lam == 1).sum())
    if partial:  # int(16 * 0.9) = 14 positions drawn with replacement
        assert 1 <= unmixed <= 14 and ((lam > 0) & (lam <= 1)).all()
    else:
        assert unmixed == 0
    torch.manual_seed(3)
    again = method.prepare(_labelled_batch(n), progress())
    assert torch.equal(again.images, mixed.images) and torch.equal(again.lam, lam)
    torch.manual_seed(4)
    assert not torch.equal(method.prepare(_labelled_batch(n), progress()).lam, lam)


@pytest.mark.parametrize("teacher, student", CROSS_FAMILY[:2])
def test_mixkd_terms_on_paper_pairs(tmp_path, teacher, student):
    result = one_step(method_from_config("mixkd"), tmp_path, teacher=teacher, student=student)
    assert set(result.terms) == {"ce", "mixkd"}
