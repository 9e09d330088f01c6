"""Logit standardisation (kdbench/losses/logit_stand.py, the switch of kd.py, dkd.py and mlkd.py), MLKD
(kdbench/methods/mlkd.py, its strong view kdbench/data/randaugment.py), ND (kdbench/methods/nd.py: class means,
projector) and its KD++ / DKD++ variants (kdpp.py, dkdpp.py; DIST++ and ReviewKD++ share the projector test here).
Gradients, teacher and checkpoint state on the default configs: tests/test_methods_contract.py.

Pinned values come from the reference code run on the inputs built by ``_inputs`` below (CPU, float64 unless
noted), with the references' own functions:
- sunshangquan/logit-standardization-KD @ f6e5aa5172bad618e801163c3385322eea673754:
  mdistiller/distillers/KD.py ``normalize`` / ``kd_loss``, DKD.py ``dkd_loss``, MLKD.py ``MLKD.forward_train``;
- Jin-Ying/Multi-Level-Logit-Distillation @ 5ee473fcf193dfb00a0598b64d0acfe6ad58a482:
  mdistiller/distillers/KD_ours.py ``KD_ours.forward_train`` (student/teacher replaced by modules returning the
  fixed weak/strong logits below);
- WangYZ1608/Knowledge-Distillation-via-ND @ fc6f3f9058ed35189a1d3c0a79a7594025e4d88f:
  CIFAR/utils.py ``DirectNormLoss`` (``.cuda()`` removed, float32, centres passed as its JSON-style dict).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from method_harness import assert_gradients_flow, make_context, method_from_config, one_step

from kdbench.losses import dkd_loss, kd_loss, mlkd_loss, nd_loss, zscore_logits
from kdbench.methods import Batch, Progress
from kdbench.methods.mlkd import MLKD
from kdbench.models import ModelOutput, create_model, run_model


def _inputs(batch: int, classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 3
    t = torch.randn(batch, classes, generator=g, dtype=torch.float64) * 5
    y = torch.randint(0, classes, (batch,), generator=g)
    return s, t, y


def _nd_inputs():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 5, generator=g) * 6
    t = torch.randn(6, 5, generator=g) * 3
    centers = torch.randn(4, 5, generator=g) + 1
    return s, t, centers, torch.tensor([0, 3, 1, 3, 2, 0])


def _progress(epoch: int) -> Progress:
    return Progress(epoch=epoch, epochs=240, step=0, steps_per_epoch=1)


# --- logit standardisation ------------------------------------------------------------------------------------

def test_zscore_matches_reference_normalize():
    s, _, _ = _inputs(8, 10, 0)
    # logit-standardization-KD KD.py normalize(s)[0]
    ref_row0 = [-1.5084694142684831, 0.2167418253425496, -0.39559566923097056, 1.4393048588779305,
                -0.23814722142579475, -0.586831738578302, -0.005881633696586727, -0.2224876635089876,
                -0.6047149218924204, 1.906081578381064]
    assert torch.allclose(zscore_logits(s)[0], torch.tensor(ref_row0, dtype=torch.float64), rtol=0, atol=1e-14)
    z = zscore_logits(s * 7 + 3)
    assert torch.allclose(z, zscore_logits(s), atol=1e-6)  # invariant to per-row scale and shift (up to eps)


@pytest.mark.parametrize("temperature, ref_on, ref_off", [
    (2.0, 0.9902567301446664, 9.790960551345698),  # KD.py kd_loss(s, t, T, True / False)
    (4.0, 1.0009508115279808, 13.268329851822674),
])
def test_kd_with_logit_stand_matches_reference(temperature, ref_on, ref_off):
    s, t, _ = _inputs(8, 10, 0)
    assert kd_loss(s, t, temperature=temperature, logit_stand=True).item() == pytest.approx(ref_on, rel=1e-12)
    assert kd_loss(s, t, temperature=temperature).item() == pytest.approx(ref_off, rel=1e-12)


@pytest.mark.parametrize("alpha, beta, temperature, ref", [
    (9.0, 72.0, 2.0, 72.05651439323005),  # DKD.py dkd_loss(..., logit_stand=True), --kd-weight 9 --base-temp 2
    (1.0, 8.0, 4.0, 7.940846572250172),
])
def test_dkd_with_logit_stand_matches_reference(alpha, beta, temperature, ref):
    s, t, y = _inputs(8, 10, 0)
    got = dkd_loss(s, t, y, alpha=alpha, beta=beta, temperature=temperature, logit_stand=True)
    assert got.item() == pytest.approx(ref, rel=1e-10)


def test_kd_and_dkd_methods_pass_the_switch():
    s, t, y = _inputs(8, 10, 0)
    batch = Batch(torch.zeros(8, 3, 4, 4), y, torch.arange(8))
    kd = method_from_config("kd", logit_stand=True, temperature=2.0, kd_weight=9.0)
    assert kd.hparams()["logit_stand"] is True
    terms = kd(ModelOutput(s), ModelOutput(t), batch, _progress(1))
    assert terms["kd"].item() == pytest.approx(9.0 * 0.9902567301446664, rel=1e-12)
    dkd = method_from_config("dkd", logit_stand=True, alpha=9.0, beta=72.0, temperature=2.0)
    terms = dkd(ModelOutput(s), ModelOutput(t), batch, _progress(20))
    assert terms["dkd"].item() == pytest.approx(72.05651439323005, rel=1e-10)
    assert method_from_config("kd").logit_stand is False and method_from_config("dkd").logit_stand is False


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_logit_stand_gradients_flow(name, tmp_path):
    assert_gradients_flow(one_step(method_from_config(name, logit_stand=True), tmp_path))


# --- MLKD ------------------------------------------------------------------------------------------------------

def _mlkd_outputs():
    sw, tw, y = _inputs(9, 7, 1)  # weak view; 9 samples and 7 classes: masks keep 5/9 samples, 4/7 classes
    ss, ts, _ = _inputs(9, 7, 2)  # strong view
    student = ModelOutput(sw, views={"strong": ModelOutput(ss)})
    teacher = ModelOutput(tw, views={"strong": ModelOutput(ts)})
    return student, teacher, Batch(torch.zeros(9, 3, 4, 4), y, torch.arange(9))


@pytest.mark.parametrize("overrides, ref", [
    # KD_ours.forward_train (Jin-Ying repo), CFG.KD: T 4, CE 0.1, KD 0.9; MLKD.py of logit-standardization-KD
    # with LOGIT_STAND False gives the same four values.
    ({}, {"ce": 0.9400030422088759, "kd": 75.44605200928723, "cc": 0.6853266546115806, "bc": 0.28442175035540274}),
    # MLKD.py (logit-standardization-KD) with LOGIT_STAND True, T 2, KD weight 9
    ({"logit_stand": True, "temperature": 2.0, "kd_weight": 9.0},
     {"ce": 0.9400030422088759, "kd": 54.70077550070394, "cc": 8.62877541515302, "bc": 4.126678341029216}),
])
def test_mlkd_matches_reference(overrides, ref):
    student, teacher, batch = _mlkd_outputs()
    terms = method_from_config("mlkd", **overrides)(student, teacher, batch, _progress(1))
    assert set(terms) == set(ref)
    for name, value in ref.items():
        assert terms[name].item() == pytest.approx(value, rel=1e-12), name
    unweighted = mlkd_loss(student.logits, teacher.logits, student.views["strong"].logits,
                           teacher.views["strong"].logits, **{k: v for k, v in overrides.items() if k != "kd_weight"})
    kd_weight = overrides.get("kd_weight", 0.9)
    assert unweighted.item() == pytest.approx((ref["kd"] + ref["cc"] + ref["bc"]) / kd_weight, rel=1e-12)


def test_mlkd_declares_the_strong_view():
    assert MLKD.views == {"strong": "randaugment_fixmatch"}
    assert method_from_config("mlkd").hparams() == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9,
                                                    "logit_stand": False}


@pytest.mark.parametrize("teacher, student", [("resnet32x4", "resnet8x4"), ("wrn_40_2", "MobileNetV2")])
def test_mlkd_terms_on_paper_pairs(teacher, student, tmp_path):
    result = one_step(method_from_config("mlkd"), tmp_path, teacher=teacher, student=student, batch_size=4)
    assert set(result.terms) == {"ce", "kd", "cc", "bc"}


# --- ND, KD++, DKD++ -------------------------------------------------------------------------------------------

def test_nd_loss_matches_reference():
    s, t, centers, labels = _nd_inputs()
    # DirectNormLoss(num_class=4, nd_loss_factor=1.0)(s, t, T_EMB, labels); student norms are above the
    # teacher's for some rows and below for others, so both branches of the max are used.
    assert nd_loss(s, t, centers, labels).item() == pytest.approx(1.062825083732605, rel=1e-6)


def test_kdpp_and_dkdpp_terms_and_warm_up():
    s_emb, t_emb, centers, labels = _nd_inputs()
    s, t, _ = _inputs(6, 4, 5)
    s, t = s.float(), t.float()
    batch = Batch(torch.zeros(6, 3, 4, 4), labels, torch.arange(6))
    student, teacher = ModelOutput(s, embedding=s_emb), ModelOutput(t, embedding=t_emb)
    for name, key, full in (("kdpp", "kd", 3.5 * kd_loss(s, t, temperature=4.0)),
                            ("dkdpp", "dkd", dkd_loss(s, t, labels, alpha=2.0, beta=8.0, temperature=4.0))):
        method = method_from_config(name)
        method.register_buffer("class_means", centers)  # what build() stores; projector: none (equal widths)
        for epoch, ramp in ((1, 0.0), (11, 0.5), (21, 1.0), (200, 1.0)):  # reference: min(1, epoch0 / 20)
            terms = method(student, teacher, batch, _progress(epoch))
            assert set(terms) == {"ce", key, "nd"}
            assert torch.allclose(terms[key], ramp * full)
        assert torch.allclose(terms["ce"], F.cross_entropy(s, labels))
        # DirectNormLoss with nd_loss_factor 2.0 (KD++) gives 2.12565016746521; DKD++ uses 0.5
        assert terms["nd"].item() == pytest.approx(method.nd_weight * 1.062825083732605, rel=1e-6)


def _class_means_by_loop(teacher, images, targets, num_classes):
    with torch.no_grad():
        emb = run_model(teacher, images, {"embedding"}).embedding
    return torch.stack([emb[targets == c].mean(0) for c in range(num_classes)])


def test_class_means_are_cached_per_teacher(tmp_path):
    torch.manual_seed(0)
    teacher = create_model("resnet8x4", 5).eval().requires_grad_(False)
    images, targets = torch.randn(20, 3, 32, 32), torch.arange(20) % 5
    context = make_context(teacher, 5, images, targets, tmp_path)
    passes = []
    plain = context.plain_train_batches
    context.plain_train_batches = lambda: passes.append(1) or plain()
    with torch.no_grad():
        probe = run_model(teacher, images[:2], {"logits", "embedding"})

    first = method_from_config("nd")
    first.build(probe, probe, context)
    assert len(passes) == 1 and list((tmp_path / "nd_class_means").glob("*.pt"))
    assert torch.allclose(first.class_means, _class_means_by_loop(teacher, images, targets, 5), atol=1e-5)
    assert "class_means" in first.state_dict()

    second = method_from_config("kdpp")
    second.build(probe, probe, context)
    assert len(passes) == 1, "the second build recomputed the class means instead of loading the cache"
    assert torch.equal(second.class_means, first.class_means)

    other_labels = make_context(teacher, 5, images, targets.flip(0), tmp_path)
    third = method_from_config("nd")
    third.build(probe, probe, other_labels)  # other labels: another cache entry
    assert len(list((tmp_path / "nd_class_means").glob("*.pt"))) == 2
    assert not torch.allclose(third.class_means, first.class_means)


SMALL = dict(batch_size=4, train_size=10)  # keeps the resnet32x4 teacher passes short on CPU
ND_TERMS = {"nd": {"ce", "nd"}, "kdpp": {"ce", "kd", "nd"}, "dkdpp": {"ce", "dkd", "nd"},
            "distpp": {"ce", "dist", "nd"}, "reviewkdpp": {"ce", "reviewkd", "nd"}}


@pytest.mark.parametrize("name, teacher, student, projected", [
    ("nd", "resnet32x4", "resnet8x4", False),  # 256 -> 256
    ("kdpp", "resnet32x4", "resnet8x4", False),
    ("kdpp", "wrn_40_2", "MobileNetV2", True),  # 1280 -> 128
    ("dkdpp", "resnet32x4", "resnet8x4", False),
    ("dkdpp", "resnet32x4", "ShuffleV2", True),  # 1024 -> 256
    ("distpp", "resnet32x4", "resnet8x4", False),
    ("distpp", "wrn_40_2", "MobileNetV2", True),
    ("reviewkdpp", "resnet32x4", "resnet8x4", False),
    ("reviewkdpp", "resnet32x4", "ShuffleV2", True),
])
def test_nd_family_projector_and_state_on_paper_pairs(name, teacher, student, projected, tmp_path):
    result = one_step(method_from_config(name), tmp_path, teacher=teacher, student=student, **SMALL)
    method = result.method
    assert set(result.terms) == ND_TERMS[name]
    projector = method.projector
    assert (projector is not None) == projected
    state = method.state_dict()
    assert "class_means" in state
    assert any(k.startswith("projector.") for k in state) == projected
    if projected:  # BatchNorm1d -> Dropout(0.5) -> Linear(student width, teacher width), zero-initialised bias
        bn, dropout, linear = projector
        assert isinstance(bn, torch.nn.BatchNorm1d) and dropout.p == 0.5
        assert linear.in_features == bn.num_features != method.class_means.shape[1] == linear.out_features
        assert bn.num_batches_tracked.item() == 1 and {"projector.0.running_mean", "projector.2.weight"} <= set(state)
    assert any(k.startswith("abfs.") for k in state) == (name == "reviewkdpp")


# The strong view's RandAugment: images from Jin-Ying/Multi-Level-Logit-Distillation @ 5ee473f,
# mdistiller/dataset/cifar100.py ``RandAugment(2, 10)`` on the 32x32 test image below after ``random.seed(s)`` and
# ``np.random.seed(s)`` (Pillow 13.0.0): (seed, sum of the uint8 pixels, sha256 of the bytes[:16]), ops drawn.
# Seeds 0-20 draw every one of the 14 operations at least once.
STRONG_VIEW_GOLDEN = [
    (0, 198730, "85d664c063447d2b"),  # Solarize + ShearY
    (1, 292212, "4548ecdfa498ae44"),  # Brightness + Solarize
    (2, 190737, "54280d110198d5cb"),  # TranslateY + TranslateY
    (3, 374371, "c247316e99863813"),  # Contrast + Rotate
    (4, 73767, "b195d28dc8fb0e1e"),  # Contrast + Brightness
    (5, 328600, "37579a211ffa3e06"),  # Sharpness + ShearY
    (6, 280476, "eba96eaa5d9c0fb6"),  # Solarize + Solarize
    (7, 383038, "f38ce67d0571bbb8"),  # Equalize + Color
    (8, 342552, "ee3e1fc61e552c62"),  # Contrast + TranslateY
    (9, 369962, "b05f1022880fbb9b"),  # Posterize + Identity
    (10, 362160, "184bf51fcd956400"),  # Rotate + Posterize
    (11, 390224, "40a8986fc015ece9"),  # Posterize + Rotate
    (12, 354086, "df267813b0227627"),  # Posterize + ShearX
    (13, 349714, "92b3cdd1e86d768f"),  # Contrast + ShearX
    (14, 220689, "1a9d9a6c034a03c3"),  # Brightness + ShearX
    (15, 359254, "4bd034dcd793d6c3"),  # TranslateY + AutoContrast
    (16, 377674, "8eb6481527ac1bb1"),  # Identity + Posterize
    (17, 213051, "7d7f98f902751656"),  # Rotate + Solarize
    (18, 362781, "cf3f3ffed119ad79"),  # Color + ShearX
    (19, 388826, "2edef441fba83ad3"),  # ShearX + ShearY
    (20, 287190, "13e86e189031e185"),  # TranslateX + ShearX
]


def _strong_view_test_image():
    import numpy as np
    from PIL import Image

    i, j, c = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    return Image.fromarray(((i * 7 + j * 13 + c * 50 + (i * j) % 17) % 256).astype(np.uint8))


@pytest.mark.parametrize("seed, pixel_sum, digest", STRONG_VIEW_GOLDEN)
def test_strong_view_equals_the_reference_randaugment(seed, pixel_sum, digest):
    import hashlib
    import random

    import numpy as np

    from kdbench.data.randaugment import rand_augment

    out = np.asarray(rand_augment(_strong_view_test_image(), random.Random(seed), np.random.RandomState(seed)))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (int(out.astype(np.int64).sum()), hashlib.sha256(out.tobytes()).hexdigest()[:16]) == (pixel_sum, digest)


def test_strong_view_draws_two_ops_with_replacement_and_a_bounded_cutout():
    import random

    import numpy as np

    from kdbench.data import randaugment as ra

    assert [name for name, _, _ in ra.OPS] == [
        "auto_contrast", "brightness", "color", "contrast", "equalize", "identity", "posterize", "rotate",
        "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y"]
    drawn, sides = [], []
    original_apply, original_cutout = ra.apply_op, ra.cutout
    try:
        ra.apply_op = lambda image, name, v: drawn.append((name, v)) or image
        ra.cutout = lambda image, side, np_rng: sides.append(side) or image
        rng, np_rng = random.Random(0), np.random.RandomState(0)
        for _ in range(3000):
            ra.rand_augment(_strong_view_test_image(), rng, np_rng)
    finally:
        ra.apply_op, ra.cutout = original_apply, original_cutout
    ranges = {name: (low, high) for name, low, high in ra.OPS}
    assert all(ranges[name][0] <= v <= ranges[name][1] for name, v in drawn)
    counts = np.bincount([list(ranges).index(name) for name, _ in drawn], minlength=len(ranges))
    assert len(drawn) == 6000 and counts.min() > 6000 / 14 * 0.8 and counts.max() < 6000 / 14 * 1.2
    pairs = list(zip(drawn[::2], drawn[1::2]))
    same = sum(a[0] == b[0] for a, b in pairs) / len(pairs)
    assert same == pytest.approx(1 / 14, abs=0.03)  # with replacement: the same op twice 1 time in 14
    assert 0 <= min(sides) and max(sides) < 16 and np.mean(sides) == pytest.approx(8, abs=0.5)


def test_strong_view_is_a_function_of_the_sample_seed_in_the_loader(tmp_path):
    import torch

    from kdbench.data.base import IndexedDataset, TensorImages, build_transforms

    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    tf = build_transforms("randaugment_fixmatch", 32, (0.5,) * 3, (0.25,) * 3, train=True)
    data = IndexedDataset(TensorImages(images, torch.arange(4)), tf)
    a, b, c = data[(1, 12345)][0], data[(1, 12345)][0], data[(1, 54321)][0]
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
