"""kdbench/methods/reviewkd_fpn.py and reviewdkd.py: ReviewKD on FPN maps and DKD + ReviewKD, as the detection code
of mdistiller (detection/model/reviewkd.py and rcnn.py @ e8c5bb3; ReviewDKD configs @ 83c7d41)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.losses import dkd_loss
from kdbench.methods import Progress
from kdbench.models import ModelOutput
from kdbench.data.batch import Batch
from method_harness import method_from_config

SIZES = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]  # p2..p6 of a 64 px image


def _fpn(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 256, h, w, generator=g) for h, w in SIZES]


def _chain_by_hand(abfs, student_maps):
    """The reference's order: the coarsest level first (no fusion), each finer level fused with the coarser result,
    outputs put back in p2..p6 order; then hcl against the teacher's maps."""
    out, residual = abfs[4].conv1(student_maps[4]), None
    results = [abfs[4].conv2(out)]
    residual = out
    for i in (3, 2, 1, 0):
        x = abfs[i].conv1(student_maps[i])
        y = F.interpolate(residual, x.shape[-2:], mode="nearest")
        z = abfs[i].att_conv(torch.cat([x, y], 1))
        x = x * z[:, 0:1] + y * z[:, 1:2]
        results.insert(0, abfs[i].conv2(x))
        residual = x
    return results


def _hcl_by_hand(fs_list, ft_list):
    total = 0.0
    for fs, ft in zip(fs_list, ft_list):
        loss, weight, tot = F.mse_loss(fs, ft), 1.0, 1.0
        for level in (4, 2, 1):
            if level >= fs.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, level), F.adaptive_avg_pool2d(ft, level))
            tot += weight
        total = total + loss / tot
    return total


def test_reviewkd_on_fpn_maps_is_the_detection_reference():
    torch.manual_seed(0)
    method = method_from_config("reviewkd_fpn", weight=1.2)
    student = ModelOutput(logits=torch.randn(6, 5), stages=_fpn(1))
    teacher = ModelOutput(logits=torch.randn(6, 5), stages=_fpn(2))
    method.build(student, teacher, None)
    assert [(a.conv1[0].in_channels, a.conv1[0].out_channels, a.conv2[0].out_channels) for a in method.abfs] == \
        [(256, 256, 256)] * 5 and method.abfs[4].att_conv is None  # build_kd_trans: 256 / 256 / 256
    method.train()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    terms = method(student, teacher, Batch(None, labels, torch.arange(6)), Progress(1, 1, 0, 1))
    with torch.no_grad():
        method.eval()  # the same BN arithmetic both ways: compare in eval mode
        got = method(student, teacher, Batch(None, labels, torch.arange(6)), Progress(1, 1, 0, 1))["reviewkd"]
        want = 1.2 * _hcl_by_hand(_chain_by_hand(method.abfs, student.stages), teacher.stages)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert set(terms) == {"ce", "reviewkd"}


def test_reviewdkd_adds_dkd_with_the_detection_defaults():
    torch.manual_seed(0)
    method = method_from_config("reviewdkd", weight=1.2)
    assert (method.alpha, method.beta, method.temperature, method.weight) == (1.0, 0.25, 1.0, 1.2)
    student = ModelOutput(logits=torch.randn(6, 5), stages=_fpn(1))
    teacher = ModelOutput(logits=torch.randn(6, 5), stages=_fpn(2))
    method.build(student, teacher, None)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    terms = method(student, teacher, Batch(None, labels, torch.arange(6)), Progress(1, 1, 0, 1))
    torch.testing.assert_close(terms["dkd"], dkd_loss(student.logits, teacher.logits, labels, alpha=1.0, beta=0.25,
                                                      temperature=1.0))
    torch.testing.assert_close(terms["ce"], F.cross_entropy(student.logits, labels))
    assert set(terms) == {"ce", "dkd", "reviewkd"}
