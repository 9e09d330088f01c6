"""kdbench/methods/crd.py (with kdbench/data/sampling.py's negative sampler) and kdbench/methods/reviewkd.py:
losses and whole method steps pinned to the reference code, negative sampling, connectors sized as the reference
tables, CRD's banks under data parallelism. Gradients and checkpoint state: tests/test_methods_contract.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from method_harness import assert_gradients_flow, make_context, method_from_config, one_step

from kdbench.data.sampling import OtherClassSampler
from kdbench.losses import crd_loss, hcl_loss
from kdbench.methods import Batch, Progress
from kdbench.methods.crd import CRD
from kdbench.methods.reviewkd import ReviewKD
from kdbench.models.outputs import ModelOutput



# ---------------------------------------------------------------------------------------------------------------
# Negative sampling
# ---------------------------------------------------------------------------------------------------------------
# 60 samples in 4 classes of sizes 10, 20, 25, 5 (pools of other-class samples: 50, 40, 35, 55), shuffled.
def _targets() -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate((10, 20, 25, 5))])
    return labels[torch.randperm(60, generator=torch.Generator().manual_seed(3))]


CHI2_39_P1E4 = 80.646  # scipy.stats.chi2.ppf(1 - 1e-4, 39): a uniform draw exceeds it with probability 1e-4


def _chi2_over_pool(draws: torch.Tensor, targets: torch.Tensor, cls: int) -> float:
    pool = (targets != cls).nonzero().squeeze(1)
    counts = torch.bincount(draws.reshape(-1), minlength=targets.numel())[pool].double()
    expected = draws.numel() / pool.numel()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("replacement", [False, True])
def test_sampler_avoids_anchor_class_and_is_uniform_over_the_others(replacement):
    targets = _targets()
    sampler = OtherClassSampler(targets, replacement=replacement)
    torch.manual_seed(0)
    classes = torch.arange(4).repeat_interleave(100)
    draws = sampler(classes, 30)
    assert draws.shape == (400, 30) and draws.dtype == torch.long
    assert (targets[draws] != classes[:, None]).all()
    for cls in range(4):
        rows = draws[classes == cls]
        assert set(rows.unique().tolist()) == set((targets != cls).nonzero().squeeze(1).tolist())
    if not replacement:  # 30 <= every pool: each row is a set of distinct samples
        assert all(len(set(row.tolist())) == 30 for row in draws)
    big = sampler(torch.ones(400, dtype=torch.long), 30)  # class 1: pool of 40 samples, 12000 draws
    assert _chi2_over_pool(big, targets, 1) < CHI2_39_P1E4


def test_sampler_falls_back_to_replacement_where_a_pool_is_smaller_than_k():
    targets = _targets()
    sampler = OtherClassSampler(targets)
    torch.manual_seed(0)
    classes = torch.arange(4).repeat_interleave(5)
    draws = sampler(classes, 45)  # pools 50, 40, 35, 55: classes 1 and 2 need replacement, 0 and 3 do not
    assert (targets[draws] != classes[:, None]).all()
    for row, cls in zip(draws, classes.tolist()):
        if cls in (0, 3):
            assert len(set(row.tolist())) == 45
    assert sampler(classes, 80).shape == (20, 80)  # k above every pool: all rows with replacement


def test_sampler_uses_the_global_rng_and_needs_two_classes():
    sampler = OtherClassSampler(_targets())
    classes = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(5)
    first = sampler(classes, 20)
    torch.manual_seed(5)
    assert torch.equal(first, sampler(classes, 20))
    with pytest.raises(ValueError, match="two classes"):
        OtherClassSampler(torch.zeros(10, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------------------
# CRD
# ---------------------------------------------------------------------------------------------------------------
# Golden values: HobbitLong/RepDistiller @ b84f547c5db6a35318d4671d7d5c4de74c822403, crd/criterion.py and
# crd/memory.py run on CPU (AliasMethod.cuda made a no-op; contrast indices are passed in, so it is unused).
# (1) ContrastLoss(50)(s) + ContrastLoss(50)(t) with torch.manual_seed(0); s = torch.rand(4, 9, float64) * 3;
#     t = torch.rand(4, 9, float64) * 3.
CRD_CONTRAST = 34.656690359157125
# (2) CRDLoss(opt) with s_dim 6, t_dim 5, feat_dim 4, nce_k 7, nce_t 0.07, nce_m 0.5, n_data 20, built after
#     torch.manual_seed(0) (embed_s, embed_t, memory_v1, memory_v2 drawn in that order, as CRD.build draws them),
#     called twice on the inputs of _crd_inputs(); then loss2.backward(). float32.
CRD_LOSS1, CRD_LOSS2 = 41.806400299072266, 19.029497146606445
CRD_Z = (1250745.875, 82286728.0)  # params[2] (student anchors), params[3] (teacher anchors)
CRD_MEM_S2 = [-0.08906270563602448, -0.08392978459596634, 0.9209156036376953, 0.37005147337913513]  # memory_v1[2]
CRD_MEM_T2 = [-0.33711981773376465, 0.6402566432952881, 0.6591495275497437, 0.20480117201805115]  # memory_v2[2]
CRD_MEM_SUMS = (-1.6585150957107544, -2.2486820220947266)
CRD_GRAD_S_SUM, CRD_GRAD_S_ABS, CRD_GRAD_T_ABS = 32.49797439575195, 61.791622161865234, 46.50596618652344


def _crd_inputs():
    torch.manual_seed(1)
    f_s1, f_t1 = torch.randn(3, 6), torch.randn(3, 5)
    f_s2, f_t2 = torch.randn(3, 6), torch.randn(3, 5)
    idx1, idx2 = torch.tensor([2, 11, 17]), torch.tensor([5, 2, 9])
    c1 = torch.tensor([[2, 0, 1, 3, 4, 5, 7, 8], [11, 0, 0, 4, 9, 13, 19, 10], [17, 2, 3, 12, 16, 18, 6, 6]])
    c2 = torch.tensor([[5, 11, 17, 0, 2, 3, 19, 19], [2, 1, 4, 7, 9, 10, 13, 14], [9, 8, 16, 17, 18, 0, 1, 5]])
    return (f_s1, f_t1, idx1, c1), (f_s2, f_t2, idx2, c2)


def _built_crd(tmp_path, s_dim: int, t_dim: int, n: int, seed: int = 0, **kw) -> CRD:
    method = CRD(**kw)
    s_probe = ModelOutput(torch.zeros(2, 4), embedding=torch.zeros(2, s_dim))
    t_probe = ModelOutput(torch.zeros(2, 4), embedding=torch.zeros(2, t_dim))
    context = make_context(None, 4, torch.zeros(n, 3, 2, 2), torch.arange(n) % 4, tmp_path)
    torch.manual_seed(seed)
    method.build(s_probe, t_probe, context)
    return method


def test_crd_loss_matches_reference():
    torch.manual_seed(0)
    s = torch.rand(4, 9, dtype=torch.float64) * 3
    t = torch.rand(4, 9, dtype=torch.float64) * 3
    assert crd_loss(s, t, num_data=50).item() == pytest.approx(CRD_CONTRAST, rel=1e-12)


def test_crd_embedding_memory_and_normaliser_match_reference(tmp_path):
    method = _built_crd(tmp_path, 6, 5, 20, feat_dim=4, nce_k=7)
    step1, step2 = _crd_inputs()
    loss1 = method.contrast_loss(*step1)
    z_after_first = method.nce_z.clone()
    loss2 = method.contrast_loss(*step2)
    loss2.backward()
    assert loss1.item() == pytest.approx(CRD_LOSS1, rel=1e-6)
    assert loss2.item() == pytest.approx(CRD_LOSS2, rel=1e-6)
    assert method.nce_z.tolist() == pytest.approx(CRD_Z, rel=1e-6)
    assert torch.equal(method.nce_z, z_after_first)  # estimated on the first batch, then kept
    assert method.memory_s[2].tolist() == pytest.approx(CRD_MEM_S2, abs=1e-6)
    assert method.memory_t[2].tolist() == pytest.approx(CRD_MEM_T2, abs=1e-6)
    assert (method.memory_s.sum().item(), method.memory_t.sum().item()) == pytest.approx(CRD_MEM_SUMS, abs=1e-5)
    grad_s, grad_t = method.embed_s.weight.grad, method.embed_t.weight.grad
    assert grad_s.sum().item() == pytest.approx(CRD_GRAD_S_SUM, rel=1e-5)
    assert grad_s.abs().sum().item() == pytest.approx(CRD_GRAD_S_ABS, rel=1e-5)
    assert grad_t.abs().sum().item() == pytest.approx(CRD_GRAD_T_ABS, rel=1e-5)


@pytest.mark.parametrize("teacher,student", [("resnet32x4", "resnet8x4"), ("wrn_40_2", "MobileNetV2")])
def test_crd_step_on_paper_pairs_updates_its_banks(tmp_path, teacher, student):
    method = method_from_config("crd")
    assert method.hparams() == {"ce_weight": 1.0, "crd_weight": 0.8, "kd_weight": 0.0, "temperature": 4.0,
                                "feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_m": 0.5,
                                "nce_replacement": False}
    result = one_step(method, tmp_path, teacher=teacher, student=student)
    assert set(result.terms) == {"ce", "crd"}
    assert (method.nce_z > 0).all()
    assert method.memory_s.shape == (32, 128)
    norms = method.memory_t[:8].norm(dim=1)  # the batch's rows were updated and renormalised
    assert torch.allclose(norms, torch.ones(8), atol=1e-5)


def test_crd_negatives_come_from_other_classes(tmp_path):
    method = _built_crd(tmp_path, 6, 5, 40, feat_dim=4, nce_k=12)
    seen = []
    method.contrast_loss = lambda s, t, index, contrast_index: seen.append(contrast_index) or torch.zeros(())
    index = torch.tensor([3, 17, 22, 9])
    out = ModelOutput(torch.randn(4, 4), embedding=torch.randn(4, 6))
    method(out, ModelOutput(torch.randn(4, 4), embedding=torch.randn(4, 5)), Batch(None, index % 4, index),
           Progress(1, 240, 0, 1))
    contrast = seen[0]
    assert contrast.shape == (4, 13) and torch.equal(contrast[:, 0], index)
    assert (contrast[:, 1:] % 4 != (index % 4)[:, None]).all()
    assert all(len(set(row.tolist())) == 12 for row in contrast[:, 1:])  # 12 <= 30 candidates: no repeats


def test_crd_with_kd_term(tmp_path):
    result = one_step(method_from_config("crd", kd_weight=1.0, nce_k=64), tmp_path, teacher="resnet8x4",
                      student="resnet8x4")
    assert set(result.terms) == {"ce", "crd", "kd"}
    assert_gradients_flow(result)


# ---------------------------------------------------------------------------------------------------------------
# ReviewKD
# ---------------------------------------------------------------------------------------------------------------
# Golden values: megvii-research/mdistiller @ a08d46f10d6102bd6e3f258ca5ac880b020ea259,
# mdistiller/distillers/ReviewKD.py, run on CPU.
# (1) hcl_loss(fs, ft) with torch.manual_seed(0), fs then ft = [torch.randn(shape, float64) for shape in
#     HCL_SHAPES]; dvlab-research/ReviewKD @ cede6ea6387ae9b6127de0e561507177bf19c11e CIFAR-100/model/reviewkd.py
#     hcl gives the same value.
HCL_SHAPES = [(2, 3, 8, 8), (2, 4, 4, 4), (2, 5, 2, 2), (2, 6, 1, 1)]
HCL_VALUE = 5.5593556912324065
# (2) ReviewKD.forward_train(image, target, epoch) with stand-in networks returning the maps of _review_case
#     (student "feats" + "pooled_feat", teacher "preact_feats" + "pooled_feat"), cfg CE 1, REVIEWKD_WEIGHT 5,
#     WARMUP 20, STU_PREACT False, IN/OUT_CHANNELS and SHAPES/OUT_SHAPES written out for these maps; the
#     distiller built after torch.manual_seed(0); then loss_kd.backward(). Values: loss_ce, loss_kd and the sum
#     of |grad| over the ABF parameters. float32.
REVIEW_CASES = {  # (student sizes, teacher sizes, epoch): (ce, reviewkd, ABF |grad| sum)
    ((8, 8, 4, 2), (8, 8, 4, 2), 7): (2.580911159515381, 21.155725479125977, 259.5943603515625),
    ((8, 4, 2, 1), (8, 8, 4, 2), 30): (2.642108201980591, 58.760581970214844, 779.1184692382812),
}


def _review_case(student_sizes, teacher_sizes):
    s_ch, t_ch = [3, 4, 6, 8], [3, 5, 7, 9]
    torch.manual_seed(1)
    s_feats = [torch.randn(3, c, h, h) for c, h in zip(s_ch, student_sizes)]
    s_pool = torch.randn(3, 8)
    t_pre = [torch.randn(3, c, h, h) * 2 for c, h in zip(t_ch, teacher_sizes)]
    t_pool = torch.randn(3, 9)
    logits, target = torch.randn(3, 10), torch.tensor([1, 4, 7])
    student = ModelOutput(logits, embedding=s_pool, stages=s_feats, preact=[f * 0 for f in s_feats])
    teacher = ModelOutput(torch.zeros(3, 10), embedding=t_pool, preact=t_pre)
    return student, teacher, target


def test_hcl_loss_matches_reference():
    torch.manual_seed(0)
    fs = [torch.randn(s, dtype=torch.float64) for s in HCL_SHAPES]
    ft = [torch.randn(s, dtype=torch.float64) for s in HCL_SHAPES]
    assert hcl_loss(fs, ft).item() == pytest.approx(HCL_VALUE, rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        hcl_loss(fs[:1], ft[1:2])


@pytest.mark.parametrize("case", list(REVIEW_CASES))
def test_reviewkd_step_matches_reference(case):
    student_sizes, teacher_sizes, epoch = case
    student, teacher, target = _review_case(student_sizes, teacher_sizes)
    method = ReviewKD()
    torch.manual_seed(0)
    method.build(student, teacher, None)
    method.train()
    terms = method(student, teacher, Batch(None, target, torch.arange(3)), Progress(epoch, 240, 0, 1))
    terms["reviewkd"].backward()
    ce, review, grad = REVIEW_CASES[case]
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert terms["reviewkd"].item() == pytest.approx(review, rel=1e-6)
    assert sum(p.grad.abs().sum() for p in method.parameters()).item() == pytest.approx(grad, rel=1e-5)


# Channels the probe must give, as dvlab-research/ReviewKD's CIFAR-100/model/reviewkd.py tables list them for
# these pairs (student IN_CHANNELS, teacher OUT_CHANNELS; the ABF middle width is min(512, last input)).
REVIEW_TABLES = {
    ("resnet32x4", "resnet8x4"): ([64, 128, 256, 256], [64, 128, 256, 256]),
    ("resnet32x4", "ShuffleV2"): ([116, 232, 464, 1024], [64, 128, 256, 256]),
    ("vgg13", "MobileNetV2"): ([12, 16, 48, 160, 1280], [128, 256, 512, 512, 512]),
}


@pytest.mark.parametrize("teacher,student", list(REVIEW_TABLES))
def test_reviewkd_connectors_match_the_reference_tables(tmp_path, teacher, student):
    method = method_from_config("reviewkd")
    assert method.hparams() == {"ce_weight": 1.0, "reviewkd_weight": 5.0, "warmup_epochs": 20,
                                "max_mid_channel": 512}
    result = one_step(method, tmp_path, teacher=teacher, student=student)
    assert set(result.terms) == {"ce", "reviewkd"}
    in_channels, out_channels = REVIEW_TABLES[teacher, student]
    assert [abf.conv1[0].in_channels for abf in method.abfs] == in_channels
    assert [abf.conv2[0].out_channels for abf in method.abfs] == out_channels
    assert {abf.conv1[0].out_channels for abf in method.abfs} == {min(512, in_channels[-1])}
    assert [abf.att_conv is not None for abf in method.abfs] == [True] * (len(in_channels) - 1) + [False]


def test_reviewkd_warm_up_is_linear_over_one_based_epochs():
    student, teacher, target = _review_case((8, 4, 2, 1), (8, 8, 4, 2))
    method = ReviewKD()
    method.build(student, teacher, None)
    batch = Batch(None, target, torch.arange(3))
    values = [method(student, teacher, batch, Progress(e, 240, 0, 1))["reviewkd"].item() for e in (1, 10, 20, 21)]
    full = values[-1]
    assert values == pytest.approx([full / 20, full / 2, full, full], rel=1e-6)


def test_reviewkd_needs_enough_student_stages():
    student, teacher, _ = _review_case((8, 8, 4, 2), (8, 8, 4, 2))
    student.stages = student.stages[:2]
    with pytest.raises(ValueError, match="at least 3 stage maps"):
        ReviewKD().build(student, teacher, None)


def _crd_rank(rank: int, world: int, init_file: str, out: str) -> None:
    """One data-parallel rank: the same CRD (same seed) on its rows of the two steps of _crd_inputs, once with
    equal shares of the 3-row batches (split 2: rows 0-1 / 2; the ranks' counts differ) and once with 1 / 2."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {}
        for split in (2, 1):
            method = _built_crd(Path(out).parent, 6, 5, 20, feat_dim=4, nce_k=7)
            rows = slice(0, split) if rank == 0 else slice(split, None)
            losses = [method.contrast_loss(*(x[rows] for x in step)).item() for step in _crd_inputs()]
            results[split] = {"memory_s": method.memory_s, "memory_t": method.memory_t, "z": method.nce_z,
                              "losses": losses}
        torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_crd_banks_under_data_parallelism_equal_one_process(tmp_path):
    """Two gloo processes, each with part of every batch: after two steps both ranks' memory banks and Z equal
    those of one process that saw the whole batches, and the ranks' losses, weighted by their rows, give its loss."""
    import torch.multiprocessing as mp

    procs = [mp.get_context("spawn").Process(target=_crd_rank, args=(r, 2, str(tmp_path / "pg"),
                                                                      str(tmp_path / f"rank{r}.pt"))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    single = _built_crd(tmp_path, 6, 5, 20, feat_dim=4, nce_k=7)
    full = [single.contrast_loss(*step).item() for step in _crd_inputs()]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for split in (2, 1):
        for r in ranks:
            torch.testing.assert_close(r[split]["memory_s"], single.memory_s, rtol=0, atol=1e-6)
            torch.testing.assert_close(r[split]["memory_t"], single.memory_t, rtol=0, atol=1e-6)
            torch.testing.assert_close(r[split]["z"], single.nce_z, rtol=1e-6, atol=0)
        for step, loss in enumerate(full):
            combined = (split * ranks[0][split]["losses"][step] + (3 - split) * ranks[1][split]["losses"][step]) / 3
            assert combined == pytest.approx(loss, rel=1e-5)
