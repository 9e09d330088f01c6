"""kdbench/methods/vid.py, cc.py and ofd.py: losses and methods pinned to their reference implementations, terms
and OFD's margins on the paper pairs, and the zoo models' ``bn_before_relu()`` that OFD's margins come from.
Gradients, teacher and checkpoint state: tests/test_methods_contract.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from method_harness import make_context, method_from_config, one_step
from kdbench.errors import ConfigError
from kdbench.losses import cc_loss, ofd_loss, vid_loss
from kdbench.losses.ofd import ofd_margin
from kdbench.methods import Batch, Progress
from kdbench.models import ModelOutput, create_model, run_model

D = torch.float64

# Golden values: the reference code run in float64 on the inputs drawn by `draws` below (same seeds, shapes and
# order), in a scratch copy of
#   megvii-research/mdistiller @ a08d46f10d6102bd6e3f258ca5ac880b020ea259 (mdistiller/distillers/VID.py `vid_loss`,
#     mdistiller/distillers/OFD.py `OFD.init_ofd_modules`, `OFD.ofd_loss`, `feat_loss`)
#   HobbitLong/RepDistiller @ b84f547c5db6a35318d4671d7d5c4de74c822403 (distiller_zoo/VID.py `VIDLoss`,
#     distiller_zoo/CC.py `Correlation`, models/util.py `LinearEmbed`)
# The two VID implementations agree on every value below to the last digit.
VID_LOSS = 3.857734569966283  # VIDLoss with the regressor replaced by identity, log_scale = drawn values
VID_LOSS_INIT = 1.2694046836950499  # same, log_scale at the references' init (float32 softplus^-1(5 - 1e-5))
VID_INIT_LOG_SCALE = 4.993229389190674  # RepDistiller VIDLoss(...).log_scale[0] (float32)
VID_METHOD = 0.6039958109349072  # sum of two VIDLoss terms with the drawn regressor weights (x 0.5) and log_scales
CC_LOSS = 5.879414098434584  # Correlation()(e_s, e_t)
CC_METHOD = 57.31347653569402  # Correlation()(LinearEmbed_s(f_s), LinearEmbed_t(f_t)) with the drawn weights
OFD_MARGINS = [-0.7978845834732056, -0.33437809348106384, -2.0183207988739014, -0.9000000357627869,
               -0.46273645758628845, -0.9689576029777527]  # init_ofd_modules on the BN below (float32)
OFD_LOSS = 37.36325898479968  # OFD.ofd_loss with identity connectors, margins from the drawn BN parameters
OFD_METHOD = 543.9594356385237  # OFD.ofd_loss with drawn conv+BN connectors; 3 student stages vs 2 teacher



def draws(seed, *shapes):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=D) for s in shapes]


def batch_of(n, num_classes=10):
    return Batch(torch.zeros(n, 3, 4, 4), torch.arange(n) % num_classes, torch.arange(n))


PROGRESS = Progress(epoch=1, epochs=240, step=0, steps_per_epoch=1)


def output(logits, **feats):
    return ModelOutput(logits=logits, **feats)


# ---------------------------------------------------------------------------------------------------- VID
def test_vid_loss_matches_references():
    pred, tgt, log_scale = draws(0, (2, 3, 4, 4), (2, 3, 4, 4), (3,))
    tgt = 2 * tgt
    assert vid_loss(pred, tgt, log_scale, eps=1e-5).item() == pytest.approx(VID_LOSS, rel=1e-12)
    init = torch.full((3,), VID_INIT_LOG_SCALE, dtype=D)
    assert vid_loss(pred, tgt, init).item() == pytest.approx(VID_LOSS_INIT, rel=1e-12)


def test_vid_method_matches_reference_and_trains_its_variances():
    s1, s2, t1, t2, w11, w12, w13, w21, w22, w23, a1, a2 = draws(
        1, (2, 4, 8, 8), (2, 5, 2, 2), (2, 6, 4, 4), (2, 3, 4, 4),
        (6, 4, 1, 1), (6, 6, 1, 1), (6, 6, 1, 1), (3, 5, 1, 1), (3, 3, 1, 1), (3, 3, 1, 1), (6,), (3,))
    stem = torch.zeros(2, 1, 8, 8, dtype=D)
    logits = torch.randn(2, 10, dtype=D)
    student, teacher = output(logits, stages=[stem, s1, s2]), output(logits, stages=[stem, t1, t2])
    method = method_from_config("vid")
    assert method.hparams() == {"ce_weight": 1.0, "vid_weight": 1.0, "init_pred_var": 5.0, "eps": 1e-5}
    method.build(student, teacher, None)
    # the variance parameters start where the references start them, and are optimised parameters
    for log_scale in method.log_scales:
        assert torch.equal(log_scale.detach(), torch.full_like(log_scale, VID_INIT_LOG_SCALE))
        assert log_scale.requires_grad and any(p is log_scale for p in method.parameters())
    method.double()
    with torch.no_grad():
        for regressor, weights, alpha, log_scale in zip(method.regressors, ((w11, w12, w13), (w21, w22, w23)),
                                                        (a1, a2), method.log_scales):
            for conv, w in zip((regressor[0], regressor[2], regressor[4]), weights):
                conv.weight.copy_(0.5 * w)
            log_scale.copy_(alpha)
    terms = method(student, teacher, batch_of(2), PROGRESS)
    assert terms["vid"].item() == pytest.approx(VID_METHOD, rel=1e-12)
    assert torch.allclose(terms["ce"], F.cross_entropy(logits, torch.arange(2)))


@pytest.mark.parametrize("teacher, student", [("resnet32x4", "resnet8x4"), ("wrn_40_2", "MobileNetV2")])
def test_vid_terms_on_paper_pairs(tmp_path, teacher, student):
    result = one_step(method_from_config("vid"), tmp_path, teacher=teacher, student=student, batch_size=4)
    assert set(result.terms) == {"ce", "vid"}


# ----------------------------------------------------------------------------------------------------- CC
def test_cc_loss_matches_reference():
    e_s, e_t = draws(2, (5, 7), (5, 7))
    assert cc_loss(e_s, e_t).item() == pytest.approx(CC_LOSS, rel=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        cc_loss(e_s[:1], e_t[:1])


def test_cc_method_matches_reference():
    f_s, f_t, w_s, b_s, w_t, b_t = draws(3, (5, 10), (5, 12), (4, 10), (4,), (4, 12), (4,))
    logits = torch.randn(5, 10, dtype=D)
    method = method_from_config("cc")
    assert method.hparams() == {"ce_weight": 1.0, "kd_weight": 0.0, "cc_weight": 0.02, "feat_dim": 128,
                                "temperature": 4.0}
    method = method_from_config("cc", feat_dim=4)
    student, teacher = output(logits, embedding=f_s), output(logits, embedding=f_t)
    method.build(student, teacher, None)
    method.double()
    with torch.no_grad():
        method.embed_s.weight.copy_(w_s), method.embed_s.bias.copy_(b_s)
        method.embed_t.weight.copy_(w_t), method.embed_t.bias.copy_(b_t)
    terms = method(student, teacher, batch_of(5), PROGRESS)
    assert set(terms) == {"ce", "cc"}  # RepDistiller's correlation run uses -a 0: no KD term
    assert terms["cc"].item() == pytest.approx(0.02 * CC_METHOD, rel=1e-12)


# ---------------------------------------------------------------------------------------------------- OFD
def test_ofd_margins_match_reference():
    weight = torch.tensor([1.0, -0.5, 2.0, 0.3, 1.5, 0.8])
    bias = torch.tensor([0.0, 0.2, -1.0, 1.5, 4.0, -0.7])  # channel 3: Phi(-m/s) <= 0.001, margin -3|w|
    margins = ofd_margin(weight, bias)
    assert margins.dtype == torch.float32
    assert torch.allclose(margins, torch.tensor(OFD_MARGINS), rtol=1e-6, atol=0)


def _bns(*params):
    bns = []
    for w, b in params:
        bn = nn.BatchNorm2d(len(w))
        with torch.no_grad():
            bn.weight.copy_(w), bn.bias.copy_(b)
        bns.append(bn)
    return bns


def test_ofd_loss_matches_reference():
    s1, s2, t1, t2, w1, b1, w2, b2 = draws(4, (2, 3, 4, 4), (2, 2, 2, 2), (2, 3, 8, 8), (2, 2, 2, 2),
                                           (3,), (3,), (2,), (2,))
    margins = [ofd_margin(bn.weight, bn.bias) for bn in _bns((w1, b1), (w2, b2))]
    assert ofd_loss([s1, s2], [t1, t2], margins).item() == pytest.approx(OFD_LOSS, rel=1e-12)


class _Teacher(nn.Module):
    def __init__(self, bns):
        super().__init__()
        self.bns = nn.ModuleList(bns)

    def bn_before_relu(self):
        return list(self.bns)


def test_ofd_method_matches_reference():
    s1, s2, s3, t1, t2, c1, c2, g1, h1, g2, h2, w1, b1, w2, b2 = draws(
        5, (2, 2, 8, 8), (2, 3, 8, 8), (2, 4, 2, 2), (2, 5, 8, 8), (2, 6, 4, 4),
        (5, 3, 1, 1), (6, 4, 1, 1), (5,), (5,), (6,), (6,), (5,), (5,), (6,), (6,))
    logits = torch.randn(2, 10, dtype=D)
    stem = torch.zeros(2, 1, 8, 8, dtype=D)
    student, teacher = output(logits, preact=[stem, s1, s2, s3]), output(logits, preact=[stem, t1, t2])
    method = method_from_config("ofd")
    assert method.hparams() == {"ce_weight": 1.0, "ofd_weight": 1e-3, "connector_kernel_size": 1}
    bns = _bns((w1, b1), (w2, b2))
    method.build(student, teacher, make_context(_Teacher(bns), 10, torch.zeros(2, 3, 4, 4), torch.arange(2), "unused"))
    method.double()
    with torch.no_grad():
        for connector, c, g, h in zip(method.connectors, (c1, c2), (g1, g2), (h1, h2)):
            connector[0].weight.copy_(c), connector[1].weight.copy_(g), connector[1].bias.copy_(h)
    terms = method(student, teacher, batch_of(2), PROGRESS)
    assert terms["ofd"].item() == pytest.approx(1e-3 * OFD_METHOD, rel=1e-12)


@pytest.mark.parametrize("teacher, student", [("resnet32x4", "resnet8x4"), ("wrn_40_2", "MobileNetV2")])
def test_ofd_margins_on_paper_pairs(tmp_path, teacher, student):
    result = one_step(method_from_config("ofd"), tmp_path, teacher=teacher, student=student, batch_size=4)
    assert set(result.terms) == {"ce", "ofd"}
    bns = result.teacher.bn_before_relu()[-len(result.method.connectors):]
    for i, bn in enumerate(bns):
        assert torch.equal(getattr(result.method, f"margin{i}"), ofd_margin(bn.weight, bn.bias))


def test_ofd_needs_a_teacher_with_bn_before_relu(tmp_path):
    with pytest.raises(ConfigError, match="teacher cifar_shufflev2: it has no bn_before_relu"):
        one_step(method_from_config("ofd"), tmp_path, teacher="ShuffleV2", student="resnet8x4")


# ---------------------------------------------------------------------------- zoo models: bn_before_relu()
# Module names of mdistiller's `get_bn_before_relu()` for the same architectures (mdistiller/models/cifar/*.py,
# checked by building both models and naming the returned modules).
@pytest.mark.parametrize("name, expected", [
    ("resnet8x4", ["layer1.0.bn2", "layer2.0.bn2", "layer3.0.bn2"]),
    ("ResNet50", ["layer1.2.bn3", "layer2.3.bn3", "layer3.5.bn3", "layer4.2.bn3"]),
    ("wrn_16_2", ["block2.layer.0.bn1", "block3.layer.0.bn1", "bn1"]),
    ("vgg8", ["block1.1", "block2.1", "block3.1", "block4.1"]),
    ("MobileNetV2", ["blocks.1.1.conv.7", "blocks.2.2.conv.7", "blocks.4.2.conv.7", "blocks.6.0.conv.7"]),
])
def test_zoo_bn_before_relu_matches_mdistiller(name, expected):
    model = create_model(name, 10).eval()
    bns = model.bn_before_relu()
    names = {id(m): n for n, m in model.named_modules()}
    assert [names[id(bn)] for bn in bns] == expected
    assert all(isinstance(bn, nn.BatchNorm2d) for bn in bns)
    with torch.no_grad():
        preact = run_model(model, torch.randn(1, 3, 32, 32), {"preact"}).preact
    assert [bn.num_features for bn in bns] == [p.shape[1] for p in preact[1:]]
