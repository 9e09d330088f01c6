"""Feature and relation distillation: kdbench/methods/fitnet.py (with _connectors.py's regressor), at.py,
nst.py, pkt.py, sp.py, rkd.py, kdsvd.py.

Loss values are pinned to the reference implementations, methods are checked for the stages they use and the
weights they apply, and each method's terms are checked on the paper pairs. Gradients, teacher and checkpoint
state on every method: tests/test_methods_contract.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from method_harness import assert_gradients_flow, method_from_config, one_step

from kdbench.errors import ConfigError
from kdbench.losses import (
    at_loss,
    fitnet_loss,
    kdsvd_loss,
    nst_loss,
    pkt_loss,
    rkd_loss,
    sp_loss,
)
from kdbench.methods import Batch, Progress
from kdbench.methods._connectors import ConvRegressor
from kdbench.models import ModelOutput, create_model, run_model

F64 = torch.float64
F32 = torch.float32



# ---------------------------------------------------------------------------
# Fixed inputs (the same construction was used to run the reference code)
# ---------------------------------------------------------------------------
def _maps(shapes, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


# Stage maps: student larger than teacher (8 vs 4), smaller (4 vs 8) and equal (4 vs 4); channels differ.
STUDENT = _maps([(4, 6, 8, 8), (4, 10, 4, 4), (4, 12, 4, 4)], seed=0)
TEACHER = _maps([(4, 5, 4, 4), (4, 7, 8, 8), (4, 9, 4, 4)], seed=1)
_g = torch.Generator().manual_seed(2)
EMB_S = torch.randn(6, 10, generator=_g, dtype=F64)
EMB_T = torch.randn(6, 14, generator=_g, dtype=F64)
# KDSVD needs equal widths per stage; float32 (the reference decomposes in float32).
SVD_S = _maps([(4, 6, 8, 8), (4, 10, 4, 4), (4, 12, 4, 4)], seed=3, dtype=F32)
SVD_T = _maps([(4, 5, 8, 8), (4, 7, 4, 4), (4, 9, 4, 4)], seed=4, dtype=F32)

# ---------------------------------------------------------------------------
# Golden values: the reference functions run on the inputs above, float64 unless noted.
#   mdistiller = megvii-research/mdistiller @ a08d46f10d6102bd6e3f258ca5ac880b020ea259,
#                mdistiller/distillers/{AT,NST,SP,PKT,RKD,KDSVD}.py functions at_loss, nst_loss, sp_loss,
#                pkt_loss, rkd_loss, kdsvd_loss;
#   RepDistiller = HobbitLong/RepDistiller @ b84f547c5db6a35318d4671d7d5c4de74c822403,
#                distiller_zoo/{AT,NST,SP,PKT,RKD}.py (Attention, NSTLoss, Similarity summed over stages,
#                PKT, RKDLoss), which gave the same numbers to the last digit.
# ---------------------------------------------------------------------------
GOLDEN = {
    "at_p2": 0.07391384274834513,   # at_loss(STUDENT, TEACHER, 2)
    "at_p4": 0.18913472983935245,   # at_loss(STUDENT, TEACHER, 4)
    "nst": 0.7256475772847522,      # nst_loss(STUDENT, TEACHER)
    "sp_last": 0.003486018096077913,  # sp_loss(STUDENT[-1:], TEACHER[-1:])
    "sp_all": 0.015062852177858663,   # sp_loss(STUDENT, TEACHER)
    "pkt": 0.010898064884106606,      # pkt_loss(EMB_S, EMB_T)
    "rkd": 1.5049369238394232,        # rkd_loss(EMB_S, EMB_T) (distance 25, angle 50)
    "rkd_squared": 2.7961450209164673,  # rkd_loss(..., squared=True)
    "rkd_distance": 0.01874735548779503,  # rkd_loss(..., distance_weight=1, angle_weight=0)
    "rkd_angle": 0.02072506073289095,     # rkd_loss(..., distance_weight=0, angle_weight=1)
}
# mdistiller kdsvd_loss(SVD_S, SVD_T, k) on float32 inputs (CPU LAPACK).
KDSVD_GOLDEN = {1: 0.18488600850105286, 2: 0.10434775054454803}

LOSS_CALLS = {
    "at_p2": lambda: at_loss(STUDENT, TEACHER, p=2),
    "at_p4": lambda: at_loss(STUDENT, TEACHER, p=4),
    "nst": lambda: nst_loss(STUDENT, TEACHER),
    "sp_last": lambda: sp_loss(STUDENT[-1:], TEACHER[-1:]),
    "sp_all": lambda: sp_loss(STUDENT, TEACHER),
    "pkt": lambda: pkt_loss(EMB_S, EMB_T),
    "rkd": lambda: rkd_loss(EMB_S, EMB_T),
    "rkd_squared": lambda: rkd_loss(EMB_S, EMB_T, squared=True),
    "rkd_distance": lambda: rkd_loss(EMB_S, EMB_T, distance_weight=1.0, angle_weight=0.0),
    "rkd_angle": lambda: rkd_loss(EMB_S, EMB_T, distance_weight=0.0, angle_weight=1.0),
}


@pytest.mark.parametrize("key", sorted(GOLDEN))
def test_loss_matches_reference(key):
    got = LOSS_CALLS[key]()
    assert got.dim() == 0 and got.dtype == F64
    assert got.item() == pytest.approx(GOLDEN[key], rel=1e-12)


@pytest.mark.parametrize("k", sorted(KDSVD_GOLDEN))
def test_kdsvd_matches_reference(k):
    got = kdsvd_loss(SVD_S, SVD_T, k=k)
    assert got.dim() == 0
    assert got.item() == pytest.approx(KDSVD_GOLDEN[k], rel=1e-5)


def test_defaults_are_published():
    assert at_loss(STUDENT, TEACHER).item() == pytest.approx(GOLDEN["at_p2"], rel=1e-12)
    assert kdsvd_loss(SVD_S, SVD_T).item() == pytest.approx(KDSVD_GOLDEN[1], rel=1e-5)
    # RKD defaults: distance 25, angle 50 -> 25 * L_d + 50 * L_a.
    assert GOLDEN["rkd"] == pytest.approx(25 * GOLDEN["rkd_distance"] + 50 * GOLDEN["rkd_angle"], rel=1e-12)


# FitNet regressor: mdistiller distillers/_common.py ConvReg (same commit; RepDistiller models/util.py ConvReg
# gave the same numbers) built right after torch.manual_seed(0), in train mode, applied to
# x = randn(student_shape, Generator seed 5); value = F.mse_loss(ConvReg(x), randn(teacher_shape, seed 6)).
CONVREG_GOLDEN = [
    # student shape, teacher shape, conv type, kernel, stride, loss
    ((2, 8, 8, 8), (2, 6, 4, 4), torch.nn.Conv2d, (3, 3), (2, 2), 1.4432578086853027),
    ((2, 8, 4, 4), (2, 6, 8, 8), torch.nn.ConvTranspose2d, (4, 4), (2, 2), 1.4886239767074585),
    ((2, 8, 8, 8), (2, 6, 8, 8), torch.nn.Conv2d, (1, 1), (1, 1), 1.4023858308792114),
    ((2, 8, 8, 8), (2, 6, 6, 6), torch.nn.Conv2d, (3, 3), (1, 1), 1.5605080127716064),
]


@pytest.mark.parametrize("s_shape,t_shape,kind,kernel,stride,value", CONVREG_GOLDEN)
def test_fitnet_regressor_and_loss_match_reference(s_shape, t_shape, kind, kernel, stride, value):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        reg = ConvRegressor(s_shape, t_shape)
    assert type(reg.conv) is kind and reg.conv.kernel_size == kernel and reg.conv.stride == stride
    x = torch.randn(s_shape, generator=torch.Generator().manual_seed(5))
    t = torch.randn(t_shape, generator=torch.Generator().manual_seed(6))
    out = reg(x)
    assert out.shape == t.shape
    assert fitnet_loss(out, t).item() == pytest.approx(value, rel=1e-6)


def test_regressor_refuses_unsupported_sizes():
    with pytest.raises(ConfigError, match="regressor"):
        ConvRegressor((2, 8, 4, 4), (2, 6, 12, 12))
    with pytest.raises(ValueError):
        fitnet_loss(torch.zeros(2, 6, 4, 4), torch.zeros(2, 6, 8, 8))


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------
def test_losses_vanish_when_student_equals_teacher():
    assert at_loss(TEACHER, TEACHER).item() == 0.0
    assert abs(nst_loss(TEACHER, TEACHER).item()) < 1e-12
    assert sp_loss(TEACHER, TEACHER).item() == 0.0
    assert pkt_loss(EMB_T, EMB_T).item() == 0.0
    assert rkd_loss(EMB_T, EMB_T).item() == 0.0
    assert fitnet_loss(TEACHER[0], TEACHER[0]).item() == 0.0
    assert abs(kdsvd_loss(SVD_T, SVD_T).item()) < 1e-10


def test_single_tensor_is_one_stage_and_layout_does_not_matter():
    # A bare tensor is one stage, never a list of its batch entries.
    assert sp_loss(STUDENT[-1], TEACHER[-1]).item() == pytest.approx(GOLDEN["sp_last"], rel=1e-12)
    # channels_last maps (the engine's fast path) give the same values.
    cl = lambda maps: [m.contiguous(memory_format=torch.channels_last) for m in maps]
    assert at_loss(cl(STUDENT), cl(TEACHER)).item() == pytest.approx(GOLDEN["at_p2"], rel=1e-12)
    assert nst_loss(cl(STUDENT), cl(TEACHER)).item() == pytest.approx(GOLDEN["nst"], rel=1e-12)
    assert sp_loss(cl(STUDENT), cl(TEACHER)).item() == pytest.approx(GOLDEN["sp_all"], rel=1e-12)
    assert kdsvd_loss(cl(SVD_S), cl(SVD_T)).item() == pytest.approx(KDSVD_GOLDEN[1], rel=1e-5)


def test_kdsvd_refuses_mismatched_widths_and_single_stage():
    with pytest.raises(ValueError, match="width"):
        kdsvd_loss(SVD_S, [SVD_T[0], SVD_T[0], SVD_T[0]])
    with pytest.raises(ValueError, match="two stage"):
        kdsvd_loss(SVD_S[:1], SVD_T[:1])


@pytest.mark.parametrize("name", ["at", "nst", "sp", "kdsvd"])
def test_stage_losses_send_gradients_to_the_student_only(name):
    fn = {"at": at_loss, "nst": nst_loss, "sp": sp_loss, "kdsvd": kdsvd_loss}[name]
    s_maps, t_maps = (SVD_S, SVD_T) if name == "kdsvd" else (STUDENT, TEACHER)
    s_maps = [m.clone().requires_grad_(True) for m in s_maps]
    t_maps = [m.clone().requires_grad_(True) for m in t_maps]
    fn(s_maps, t_maps).backward()
    assert all(m.grad is not None and torch.isfinite(m.grad).all() for m in s_maps[1:])
    assert any(m.grad.abs().sum() > 0 for m in s_maps)
    assert all(m.grad is None for m in t_maps)


@pytest.mark.parametrize("name", ["pkt", "rkd"])
def test_embedding_losses_gradcheck(name):
    fn = {"pkt": pkt_loss, "rkd": rkd_loss}[name]
    s = EMB_S.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fn(x, EMB_T), (s,))
    t = EMB_T.clone().requires_grad_(True)
    fn(s, t).backward()
    assert t.grad is None


# ---------------------------------------------------------------------------
# Methods: published defaults, stages used, weights
# ---------------------------------------------------------------------------
PUBLISHED = {  # mdistiller configs/cifar100/<m>.yaml with mdistiller/engine/cfg.py
    "fitnet": {"hint_layer": 2, "ce_weight": 1.0, "feat_weight": 100.0},
    "at": {"p": 2, "ce_weight": 1.0, "feat_weight": 1000.0},
    "nst": {"ce_weight": 1.0, "feat_weight": 50.0},
    "pkt": {"ce_weight": 1.0, "feat_weight": 30000.0},
    "sp": {"ce_weight": 1.0, "feat_weight": 3000.0},
    "rkd": {"ce_weight": 1.0, "feat_weight": 1.0, "distance_weight": 25.0, "angle_weight": 50.0,
            "squared": False, "eps": 1e-12},
    "kdsvd": {"k": 1, "ce_weight": 1.0, "feat_weight": 1.0},
}
NEEDS = {"fitnet": "stages", "at": "stages", "nst": "stages", "sp": "stages", "kdsvd": "stages",
         "pkt": "embedding", "rkd": "embedding"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_config_defaults_and_needs(name):
    method = method_from_config(name)
    assert method.method_name == name
    assert method.hparams() == PUBLISHED[name]
    assert method.needs == frozenset({"logits", NEEDS[name]})


def _outputs(logits_seed, maps, embedding):
    g = torch.Generator().manual_seed(logits_seed)
    return ModelOutput(logits=torch.randn(4, 10, generator=g, dtype=F64), embedding=embedding, stages=maps)


def test_methods_use_the_reference_stages_and_weights():
    # A stem map that would change every stage loss if it were used.
    stem_s, stem_t = torch.full((4, 3, 8, 8), 5.0, dtype=F64), torch.zeros(4, 3, 8, 8, dtype=F64)
    s_emb = torch.randn(4, 10, generator=torch.Generator().manual_seed(8), dtype=F64)
    t_emb = torch.randn(4, 14, generator=torch.Generator().manual_seed(9), dtype=F64)
    s = _outputs(0, [stem_s, *STUDENT], s_emb)
    t = _outputs(1, [stem_t, *TEACHER], t_emb)
    batch = Batch(torch.zeros(4, 3, 32, 32), torch.tensor([0, 3, 5, 9]), torch.arange(4))
    progress = Progress(epoch=1, epochs=240, step=0, steps_per_epoch=1)
    ce = F.cross_entropy(s.logits, batch.targets)
    expected = {
        "at": 1000.0 * at_loss(STUDENT, TEACHER, p=2),          # feats[1:]
        "nst": 50.0 * nst_loss(STUDENT, TEACHER),               # feats[1:]
        "sp": 3000.0 * sp_loss(STUDENT[-1:], TEACHER[-1:]),     # feats[-1]
        "pkt": 30000.0 * pkt_loss(s_emb, t_emb),                # pooled_feat
        "rkd": 1.0 * rkd_loss(s_emb, t_emb),                    # pooled_feat
    }
    for name, value in expected.items():
        terms = method_from_config(name)(s, t, batch, progress)
        assert set(terms) == {"ce", name}
        assert terms["ce"].item() == pytest.approx(ce.item(), rel=1e-12)
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-12), name
    svd_s = _outputs(0, [stem_s.float(), *SVD_S], None)
    svd_t = _outputs(1, [stem_t.float(), *SVD_T], None)
    kdsvd = method_from_config("kdsvd")
    kdsvd.build(svd_s, svd_t, None)
    assert kdsvd(svd_s, svd_t, batch, progress)["kdsvd"].item() == pytest.approx(KDSVD_GOLDEN[1], rel=1e-5)


def test_losses_run_in_float32_under_autocast():
    # Under bf16 autocast the models give bf16 maps; the methods compute their loss on float32 copies.
    s_emb = torch.randn(4, 10, generator=torch.Generator().manual_seed(8))
    t_emb = torch.randn(4, 14, generator=torch.Generator().manual_seed(9))
    stem = torch.zeros(4, 3, 8, 8)
    half = lambda maps: [m.to(torch.bfloat16) for m in maps]
    s = ModelOutput(torch.randn(4, 10).bfloat16(), s_emb.bfloat16(), half([stem, *SVD_S]))
    t = ModelOutput(torch.randn(4, 10).bfloat16(), t_emb.bfloat16(), half([stem, *SVD_T]))
    s32 = [m.float() for m in s.stages[1:]]
    t32 = [m.float() for m in t.stages[1:]]
    expected = {
        "at": 1000.0 * at_loss(s32, t32), "nst": 50.0 * nst_loss(s32, t32),
        "sp": 3000.0 * sp_loss(s32[-1], t32[-1]), "kdsvd": kdsvd_loss(s32, t32),
        "pkt": 30000.0 * pkt_loss(s.embedding.float(), t.embedding.float()),
        "rkd": rkd_loss(s.embedding.float(), t.embedding.float()),
    }
    batch = Batch(torch.zeros(4, 3, 32, 32), torch.tensor([0, 3, 5, 9]), torch.arange(4))
    progress = Progress(epoch=1, epochs=240, step=0, steps_per_epoch=1)
    for name, value in expected.items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = method_from_config(name)(s, t, batch, progress)[name]
        assert got.dtype == F32, name
        assert got.item() == pytest.approx(value.item(), rel=1e-6), name


def test_fitnet_regresses_the_hint_layer():
    s_maps = _maps([(4, 3, 8, 8), (4, 5, 8, 8), (4, 6, 8, 8)], seed=10)
    t_maps = _maps([(4, 3, 8, 8), (4, 5, 8, 8), (4, 7, 4, 4)], seed=11)
    s, t = _outputs(0, s_maps, None), _outputs(1, t_maps, None)
    method = method_from_config("fitnet")
    method.build(s, t, None)
    method.double()
    reg = method.regressor
    assert reg.conv.in_channels == 6 and reg.conv.out_channels == 7 and reg.conv.stride == (2, 2)
    batch = Batch(torch.zeros(4, 3, 32, 32), torch.tensor([0, 3, 5, 9]), torch.arange(4))
    terms = method(s, t, batch, Progress(epoch=1, epochs=240, step=0, steps_per_epoch=1))
    assert set(terms) == {"ce", "fitnet"}
    with torch.no_grad():  # train-mode BatchNorm normalises with the batch statistics: same output again
        expected = 100.0 * fitnet_loss(reg(s_maps[2]), t_maps[2])
    assert expected.item() > 0
    assert terms["fitnet"].item() == pytest.approx(expected.item(), rel=1e-12)
    with pytest.raises(ConfigError, match="hint_layer"):
        method_from_config("fitnet", hint_layer=3).build(s, t, None)


# ---------------------------------------------------------------------------
# One engine step on the paper pairs
# ---------------------------------------------------------------------------
PAIRS = {
    "same": ("resnet32x4", "resnet8x4"),
    "cross": ("wrn_40_2", "MobileNetV2"),
}


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("name", ["fitnet", "at", "nst", "sp", "pkt", "rkd"])
def test_terms_on_paper_pairs(name, pair, tmp_path):
    teacher, student = PAIRS[pair]
    result = one_step(method_from_config(name), tmp_path, teacher=teacher, student=student, batch_size=4,
                      train_size=8)
    assert set(result.terms) == {"ce", name}
    assert result.terms[name].item() > 0


@pytest.mark.parametrize("teacher,student", [("resnet32x4", "resnet8x4"), ("resnet32x4", "wrn_16_2")])
def test_kdsvd_gradients_flow(teacher, student, tmp_path):
    # KDSVD decomposes over the map width, so a cross-family pair must share stage widths (32, 16, 8); the
    # contract's cross-family pair has other widths (refused), so the gradients of this one are checked here.
    result = one_step(method_from_config("kdsvd"), tmp_path, teacher=teacher, student=student, batch_size=4,
                      train_size=8)
    assert result.terms["kdsvd"].item() > 0
    assert_gradients_flow(result)


def test_kdsvd_refuses_pairs_with_other_widths():
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        s = run_model(create_model("MobileNetV2", 10).eval(), x, {"stages"})
        t = run_model(create_model("wrn_40_2", 10).eval(), x, {"stages"})
    with pytest.raises(ConfigError, match="widths"):
        method_from_config("kdsvd").build(s, t, None)


def test_fitnet_regressor_on_a_cross_family_pair(tmp_path):
    result = one_step(method_from_config("fitnet"), tmp_path, teacher="wrn_40_2", student="MobileNetV2",
                      batch_size=4, train_size=8)
    method = result.method
    assert isinstance(method.regressor.conv, torch.nn.ConvTranspose2d)  # 8x8 student hint -> 16x16 teacher hint
    assert any(p is method.regressor.conv.weight for p in method.parameters())  # optimised with the student
    state = method.state_dict()
    assert "regressor.bn.running_mean" in state and int(state["regressor.bn.num_batches_tracked"]) == 1
