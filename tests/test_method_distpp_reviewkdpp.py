"""kdbench/methods/distpp.py and reviewkdpp.py (DIST++ and ReviewKD++): whole training-step terms pinned to the
reference code, warm-up, defaults (their projector test on the paper pairs is the ND family's, in
test_method_logit_stand_mlkd_nd.py; gradients and checkpoint state: tests/test_methods_contract.py).

Golden values: WangYZ1608/Knowledge-Distillation-via-ND @ fc6f3f9058ed35189a1d3c0a79a7594025e4d88f, by calling
the reference's own ``train()`` for one batch (CPU, float32, ``.cuda()`` made the identity, the data loader a
one-batch list, the optimiser a no-op; ``train()`` returns the batch's cls / kd / nd terms):
- DIST++: CIFAR/DIST++/train_dist.py ``train`` with ``DIST(beta=1, gamma=1, tau=4)`` and
  ``DirectNormLoss(nd_loss_factor)`` from CIFAR/DIST++/utils.py; the student a stand-in returning the fixed
  embedding and logits of ``_distpp_inputs``, wrapped in models/embtrans_cifar.py ``EmbTrans`` with model name
  ``wrn40_1_cifar`` (projector 64 -> 128) for the projected case; ``warm_up 20``.
- ReviewKD++: CIFAR/ReviewKD++/train_reviewkd.py ``train`` with ``DirectNormLoss`` from CIFAR/ReviewKD++/utils.py;
  the model models/reviewkd.py ``ReviewKD(stand-in student, in_channels [16, 32, 64, 64], out_channels
  [32, 64, 128, 128], shapes [1, 2, 4, 8], out_shapes [1, 4, 8, 16], model_name 'wrn40_1_cifar')`` (fc1:
  64 -> 128); the stand-in student returns ``stages + [pooled map]``, embedding, logits of ``_reviewkdpp_inputs``,
  the stand-in teacher ``preact + [pooled map]``, embedding, logits; ``warm_up 20``.
The class means are the fixed ``centers`` (passed as the reference's JSON-style dict). Parameters are created after
``torch.manual_seed(0)`` (reference model / kdbench ``build``) and every step runs after ``torch.manual_seed(1)``,
so the projector's dropout draws the same mask on both sides. Reference epochs are 0-based: its epochs 0, 10, 25
are kdbench's 1, 11, 26. After the last step: sums of |grad| (the total loss backpropagated).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from method_harness import method_from_config

from kdbench.losses import dist_loss, hcl_loss, nd_loss
from kdbench.methods import Batch, Progress
from kdbench.methods.distpp import DISTPP
from kdbench.methods.reviewkdpp import ReviewKDPP
from kdbench.models import ModelOutput

EPOCHS = (1, 11, 26)  # the reference's 0-based epochs 0, 10, 25


def _progress(epoch: int) -> Progress:
    return Progress(epoch=epoch, epochs=240, step=0, steps_per_epoch=1)


def _distpp_inputs(projected: bool = True):
    g = torch.Generator().manual_seed(11)
    s_logits = torch.randn(6, 5, generator=g) * 3
    t_logits = torch.randn(6, 5, generator=g) * 5
    s_emb = torch.randn(6, 64, generator=g) * 2 + 0.5
    # teacher norms below and above the student's: both branches of DirectNormLoss's max
    t_emb = torch.randn(6, 128, generator=g).abs() * torch.tensor([0.2, 1.0, 0.3, 2.0, 0.5, 1.0])[:, None]
    centers = torch.randn(5, 128, generator=g).abs()
    labels = torch.tensor([0, 3, 1, 4, 2, 3])
    if not projected:  # equal widths: no projector
        t_emb, centers = t_emb[:, :64], centers[:, :64]
    return s_logits, t_logits, s_emb, t_emb, centers, labels


def _reviewkdpp_inputs():
    g = torch.Generator().manual_seed(12)
    s_stages = [torch.randn(4, c, h, h, generator=g) for c, h in zip((8, 16, 32, 64), (16, 8, 4, 2))]
    s_emb = torch.randn(4, 64, generator=g).abs()
    t_preact = [torch.randn(4, c, h, h, generator=g) * 2 for c, h in zip((8, 32, 64, 128), (32, 16, 8, 4))]
    t_emb = torch.randn(4, 128, generator=g).abs() * torch.tensor([0.1, 1.0, 0.2, 2.0])[:, None]
    s_logits = torch.randn(4, 5, generator=g) * 3
    t_logits = torch.randn(4, 5, generator=g) * 5
    centers = torch.randn(5, 128, generator=g).abs()
    labels = torch.tensor([1, 4, 0, 4])
    return s_stages, s_emb, t_preact, t_emb, s_logits, t_logits, centers, labels


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x.clone().requires_grad_(True)


def _build(method, student, teacher, centers, monkeypatch):
    """``build`` as the trainer calls it, with the teacher's class means replaced by the fixed ``centers``."""
    monkeypatch.setattr("kdbench.methods.nd.teacher_class_means", lambda context: centers.clone())
    torch.manual_seed(0)
    method.build(student, teacher, None)
    method.train()
    return method


def _steps(method, student, teacher, batch, leaves):
    """The terms at each of EPOCHS (each step after torch.manual_seed(1)); the last step's total is backpropagated."""
    values = {}
    for epoch in EPOCHS:
        for p in list(method.parameters()) + leaves:
            p.grad = None
        torch.manual_seed(1)
        terms = method(student, teacher, batch, _progress(epoch))
        values[epoch] = {name: value.item() for name, value in terms.items()}
        sum(terms.values()).backward()
    return values


def _grad_sum(params) -> float:
    return sum(p.grad.abs().sum().item() for p in params)


# --- DIST++ ------------------------------------------------------------------------------------------------------

# train_dist.py train(): {epoch0: (cls_loss, div_loss, norm_dir_loss)} and |grad| sums (projector, s_emb, s_logits)
DISTPP_CASES = {
    # res32x4 -> res8x4 defaults (1.0*cls + 1.5*kd + 4.0*nd), EmbTrans 64 -> 128
    "projected": ({}, {0: (3.1714208126068115, 0.0, 3.771965265274048),
                       10: (3.1714208126068115, 20.150390625, 3.771965265274048),
                       25: (3.1714208126068115, 40.30078125, 3.771965265274048)},
                  (101.60857832431793, 0.6873670816421509, 12.724909782409668)),
    # res56 -> res20 weights (1.0*cls + 2.0*kd + 1.0*nd), equal widths (no EmbTrans)
    "equal widths": ({"kd_weight": 2.0, "nd_weight": 1.0},
                     {0: (3.1714208126068115, 0.0, 0.819968044757843),
                      10: (3.1714208126068115, 26.8671875, 0.819968044757843),
                      25: (3.1714208126068115, 53.734375, 0.819968044757843)},
                     (None, 0.38906481862068176, 16.934173583984375)),
}
DIST_T4 = 26.86718586632923  # utils.py DIST(1, 1, 4.0)(s_logits, t_logits) in float64


def _assert_reference_terms(values: dict, reference: dict, distill: str) -> None:
    """kdbench's terms at epoch e + 1 against the reference's (cls, kd, nd) at its 0-based epoch e."""
    for epoch, (ce, kd, nd) in reference.items():
        got = values[epoch + 1]
        assert set(got) == {"ce", distill, "nd"}
        assert got["ce"] == pytest.approx(ce, rel=1e-6)
        assert got[distill] == pytest.approx(kd, rel=1e-6, abs=0)
        assert got["nd"] == pytest.approx(nd, rel=1e-6)


@pytest.mark.parametrize("case", list(DISTPP_CASES))
def test_distpp_step_matches_reference(case, monkeypatch):
    overrides, ref_terms, (ref_proj, ref_emb, ref_logits) = DISTPP_CASES[case]
    s_logits, t_logits, s_emb, t_emb, centers, labels = _distpp_inputs(projected=case == "projected")
    s_logits, s_emb = _leaf(s_logits), _leaf(s_emb)
    student, teacher = ModelOutput(s_logits, embedding=s_emb), ModelOutput(t_logits, embedding=t_emb)
    method = _build(method_from_config("distpp", **overrides), student, teacher, centers, monkeypatch)
    assert (method.projector is not None) == (ref_proj is not None)
    values = _steps(method, student, teacher, Batch(torch.zeros(6, 3, 2, 2), labels, torch.arange(6)),
                    [s_logits, s_emb])
    _assert_reference_terms(values, ref_terms, "dist")
    if ref_proj is not None:
        assert _grad_sum(method.projector.parameters()) == pytest.approx(ref_proj, rel=1e-5)
    assert s_emb.grad.abs().sum().item() == pytest.approx(ref_emb, rel=1e-5)
    assert s_logits.grad.abs().sum().item() == pytest.approx(ref_logits, rel=1e-5)


def test_distpp_terms_are_dist_and_nd():
    s_logits, t_logits, s_emb, t_emb, centers, labels = _distpp_inputs(projected=False)
    assert dist_loss(s_logits.double(), t_logits.double()).item() == pytest.approx(DIST_T4, rel=1e-12)
    method = method_from_config("distpp")
    method.register_buffer("class_means", centers)  # what build() stores; no projector (equal widths)
    terms = method(ModelOutput(s_logits, embedding=s_emb), ModelOutput(t_logits, embedding=t_emb),
                   Batch(torch.zeros(6, 3, 2, 2), labels, torch.arange(6)), _progress(30))
    assert torch.allclose(terms["ce"], F.cross_entropy(s_logits, labels))
    assert torch.allclose(terms["dist"], 1.5 * dist_loss(s_logits, t_logits, temperature=4.0))
    assert torch.allclose(terms["nd"], 4.0 * nd_loss(s_emb, t_emb, centers, labels))


# --- ReviewKD++ --------------------------------------------------------------------------------------------------

# train_reviewkd.py train() with the defaults (1.0*cls + 8.0*kd + 1.0*nd): {epoch0: (cls_loss, kd_loss, nd_loss)}
REVIEWKDPP_TERMS = {0: (4.455181121826172, 0.0, 1.036323070526123),
                    10: (4.455181121826172, 47.86964416503906, 1.036323070526123),
                    25: (4.455181121826172, 95.73928833007812, 1.036323070526123)}
# |grad| sums after the epoch-25 step: ABF blocks, fc1, embedding, stage maps (the stem's unused), logits
REVIEWKDPP_GRADS = {"abfs": 4634.388882100582, "projector": 28.688374489545822, "s_emb": 29.563541412353516,
                    "s_stages": [None, 4.780998706817627, 6.1087327003479, 5.8040924072265625],
                    "s_logits": 1.945540189743042}


def _reviewkdpp_outputs():
    s_stages, s_emb, t_preact, t_emb, s_logits, t_logits, centers, labels = _reviewkdpp_inputs()
    s_stages, s_emb, s_logits = [_leaf(s) for s in s_stages], _leaf(s_emb), _leaf(s_logits)
    student = ModelOutput(s_logits, embedding=s_emb, stages=s_stages)
    teacher = ModelOutput(t_logits, embedding=t_emb, preact=t_preact)
    return student, teacher, centers, Batch(torch.zeros(4, 3, 2, 2), labels, torch.arange(4))


def test_reviewkdpp_step_matches_reference(monkeypatch):
    student, teacher, centers, batch = _reviewkdpp_outputs()
    method = _build(method_from_config("reviewkdpp"), student, teacher, centers, monkeypatch)
    assert [abf.conv1[0].in_channels for abf in method.abfs] == [16, 32, 64, 64]
    assert [abf.conv2[0].out_channels for abf in method.abfs] == [32, 64, 128, 128]
    leaves = [*student.stages, student.embedding, student.logits]
    values = _steps(method, student, teacher, batch, leaves)
    _assert_reference_terms(values, REVIEWKDPP_TERMS, "reviewkd")
    ref = REVIEWKDPP_GRADS
    assert _grad_sum(method.abfs.parameters()) == pytest.approx(ref["abfs"], rel=1e-5)
    assert _grad_sum(method.projector.parameters()) == pytest.approx(ref["projector"], rel=1e-5)
    assert student.embedding.grad.abs().sum().item() == pytest.approx(ref["s_emb"], rel=1e-5)
    assert student.stages[0].grad is None
    for stage, expected in zip(student.stages[1:], ref["s_stages"][1:]):
        assert stage.grad.abs().sum().item() == pytest.approx(expected, rel=1e-5)
    assert student.logits.grad.abs().sum().item() == pytest.approx(ref["s_logits"], rel=1e-5)


def test_reviewkdpp_terms_are_reviewkd_and_nd(monkeypatch):
    student, teacher, centers, batch = _reviewkdpp_outputs()
    method = _build(method_from_config("reviewkdpp"), student, teacher, centers, monkeypatch).eval()
    terms = method(student, teacher, batch, _progress(30))
    targets = list(teacher.preact[1:]) + [teacher.embedding[:, :, None, None]]
    inputs = list(student.stages[1:]) + [student.embedding[:, :, None, None]]
    results, above = [None] * 4, None
    for i in reversed(range(4)):
        results[i], above = method.abfs[i](inputs[i], above, targets[i].shape[-2:])
    assert torch.allclose(terms["reviewkd"], 8.0 * hcl_loss(results, targets))
    projected = method.projector(student.embedding)
    assert torch.allclose(terms["nd"], 1.0 * nd_loss(projected, teacher.embedding, centers, batch.targets))


# --- warm-up -----------------------------------------------------------------------------------------------------

RAMP = ((1, 0.0), (2, 1 / 20), (11, 0.5), (20, 19 / 20), (21, 1.0), (22, 1.0), (240, 1.0))  # min(1, epoch0 / 20)


def test_distpp_warm_up_ramps_only_dist():
    s_logits, t_logits, s_emb, t_emb, centers, labels = _distpp_inputs(projected=False)
    student, teacher = ModelOutput(s_logits, embedding=s_emb), ModelOutput(t_logits, embedding=t_emb)
    batch = Batch(torch.zeros(6, 3, 2, 2), labels, torch.arange(6))
    method = method_from_config("distpp")
    method.register_buffer("class_means", centers)
    full = 1.5 * dist_loss(s_logits, t_logits, temperature=4.0)
    first = method(student, teacher, batch, _progress(1))
    for epoch, ramp in RAMP:
        terms = method(student, teacher, batch, _progress(epoch))
        assert torch.allclose(terms["dist"], ramp * full), epoch
        assert torch.equal(terms["ce"], first["ce"]) and torch.equal(terms["nd"], first["nd"])
    method.warmup_epochs = 0
    assert torch.allclose(method(student, teacher, batch, _progress(1))["dist"], full)


def test_reviewkdpp_warm_up_ramps_only_reviewkd(monkeypatch):
    student, teacher, centers, batch = _reviewkdpp_outputs()
    method = _build(method_from_config("reviewkdpp"), student, teacher, centers, monkeypatch).eval()
    full = method(student, teacher, batch, _progress(100))
    for epoch, ramp in RAMP:
        terms = method(student, teacher, batch, _progress(epoch))
        assert torch.allclose(terms["reviewkd"], ramp * full["reviewkd"]), epoch
        assert torch.equal(terms["ce"], full["ce"]) and torch.equal(terms["nd"], full["nd"])
    method.warmup_epochs = 0
    assert torch.allclose(method(student, teacher, batch, _progress(1))["reviewkd"], full["reviewkd"])


# --- defaults, gradients on real pairs, state -------------------------------------------------------------------

def test_published_defaults():
    assert method_from_config("distpp").hparams() == {"ce_weight": 1.0, "kd_weight": 1.5, "nd_weight": 4.0, "beta": 1.0,
                                                      "gamma": 1.0, "temperature": 4.0, "warmup_epochs": 20}
    assert method_from_config("reviewkdpp").hparams() == {"ce_weight": 1.0, "reviewkd_weight": 8.0, "nd_weight": 1.0,
                                                          "warmup_epochs": 20, "max_mid_channel": 512}
    assert isinstance(method_from_config("distpp"), DISTPP) and isinstance(method_from_config("reviewkdpp"), ReviewKDPP)
    assert ReviewKDPP.needs == {"logits", "embedding", "stages"}
    assert ReviewKDPP.teacher_needs == {"logits", "embedding", "preact"}
