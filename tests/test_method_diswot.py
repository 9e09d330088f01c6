"""DisWOT-dagger (kdbench/methods/diswot.py): DisWOT's relation and semantic similarities as distillation terms.

The terms are pinned to the DisWOT reference pipeline on a fixed pair (the same golden numbers as the search score
in tests/test_search_diswot.py, whose header names the repository, files and commit); the semantic term's gradient
is checked against differentiating the backward gradient itself (double backward). Contract (build, finite terms,
gradients, checkpoints, recorded hyper-parameters): tests/test_methods_contract.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from method_harness import assert_gradients_flow, method_from_config, one_step

from kdbench.losses import diswot_semantic_loss
from kdbench.methods import Batch, Progress
from kdbench.models import create_model, run_model
from kdbench.search.score import prepare

F64 = torch.float64
PROGRESS = Progress(epoch=1, epochs=240, step=0, steps_per_epoch=10)

# The reference pipeline on resnet32x4 -> resnet8x4 (tests/test_search_diswot.py PAIR_GOLDEN: lliai/DisWOT-CVPR2023
# @ dffe4e6, README "Core Code" / distiller_zoo SP + ICKD / exps/parse_nb201_distill.py network_weight_gaussian_init,
# both networks Gaussian-initialised and in training mode, 10 classes, float64).
_g = torch.Generator().manual_seed(2)
IMAGES = torch.randn(8, 3, 32, 32, generator=_g, dtype=F64)
LABELS = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
RELATION, SEMANTIC = 0.007044797162299221, 0.23622221518873082


def test_defaults_and_needs():
    method = method_from_config("diswot")
    assert method.hparams() == {"ce_weight": 1.0, "relation_weight": 3000.0, "semantic_weight": 1.0}
    assert method.needs == {"logits", "embedding", "stages"} and method.uses_teacher


def test_terms_match_the_reference(float64_default):
    method = method_from_config("diswot")
    teacher = prepare(create_model, "resnet32x4", 10, 32, 0, "gaussian")
    student = prepare(create_model, "resnet8x4", 10, 32, 1, "gaussian")
    s_out, t_out = run_model(student, IMAGES, method.needs), run_model(teacher, IMAGES, method.needs)
    terms = method(s_out, t_out, Batch(IMAGES, LABELS, torch.arange(8), {}), PROGRESS)
    assert set(terms) == {"ce", "relation", "semantic"}
    assert terms["relation"].item() == pytest.approx(3000.0 * RELATION, rel=1e-9)
    assert terms["semantic"].item() == pytest.approx(SEMANTIC, rel=1e-9)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(s_out.logits, LABELS).item(), rel=1e-12)
    weighted = method_from_config("diswot", ce_weight=0.5, relation_weight=10.0, semantic_weight=2.0)
    terms = weighted(s_out, t_out, Batch(IMAGES, LABELS, torch.arange(8), {}), PROGRESS)
    assert terms["relation"].item() == pytest.approx(10.0 * RELATION, rel=1e-9)
    assert terms["semantic"].item() == pytest.approx(2.0 * SEMANTIC, rel=1e-9)


def test_semantic_gradient_is_the_double_backward_one(float64_default):
    """The closed-form classifier gradient trains the student exactly as differentiating ``fc.weight.grad``
    (``torch.autograd.grad(CE, W, create_graph=True)``) would."""
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", 10), create_model("resnet14", 10).eval().requires_grad_(False)
    method = method_from_config("diswot", ce_weight=0.0, relation_weight=0.0)
    s_out, t_out = run_model(student, IMAGES, method.needs), run_model(teacher, IMAGES, method.needs)
    loss = sum(method(s_out, t_out, Batch(IMAGES, LABELS, torch.arange(8), {}), PROGRESS).values())
    params = [p for p in student.parameters()]
    ours = torch.autograd.grad(loss, params, allow_unused=True)

    s_out = run_model(student, IMAGES, method.needs)
    w_s = torch.autograd.grad(F.cross_entropy(s_out.logits, LABELS), student.fc.weight, create_graph=True)[0]
    fc_t = teacher.fc
    weight_t = fc_t.weight.detach().clone().requires_grad_(True)
    w_t = torch.autograd.grad(F.cross_entropy(F.linear(t_out.embedding, weight_t, fc_t.bias), LABELS), weight_t)[0]
    reference = torch.autograd.grad(diswot_semantic_loss(w_s, w_t), params, allow_unused=True)
    for (name, p), a, b in zip(student.named_parameters(), ours, reference):
        zero = torch.zeros_like(p)
        torch.testing.assert_close(zero if a is None else a, zero if b is None else b, rtol=1e-9, atol=1e-12,
                                   msg=name)
    assert any(g is not None and g.abs().sum() > 0 for g in ours[:-2])  # reaches the trunk, not only the head


@pytest.mark.parametrize("teacher, student", [("resnet32x4", "resnet8x4"), ("resnet32x4", "ShuffleV1"),
                                              ("wrn_40_2", "cifar_vgg11_w16")])
def test_gradients_and_terms_on_pairs(tmp_path, teacher, student):
    result = one_step(method_from_config("diswot"), tmp_path, teacher=teacher, student=student)
    assert_gradients_flow(result)
    assert set(result.terms) == {"ce", "relation", "semantic"}
    assert all(torch.isfinite(v) and v > 0 for v in result.terms.values())
