"""kdbench/methods/trg.py and acamkd.py (with kdbench/losses/trg.py and acamkd.py): two methods without published
code, pinned to values worked out by hand or in plain Python loops, independent of the implementation.

Neither paper's method section could be retrieved (docs/paper_methods.md), so the equations are those of the
papers as their secondary summaries transcribe them and the paper's equation numbers are unknown; each test
names the equation it pins:

- TRG, Zhang, Liu, He, arXiv 2306.12442: node alignment (the global relationship InfoNCE), edge alignment (the
  local preserving loss on Gaussian k-NN graphs), the token-wise contextual loss, the total loss
  ``L_logit + alpha L_inner + beta L_local + gamma L_global`` and the dynamic (falling) node temperature;
- ACAM-KD, Lan & Tian, ICCV 2025, arXiv 2503.06307: STCA-FF (``Q = W_q F_T``, ``K = W_k F_S``, ``V = W_v F_S``,
  ``F_fused = softmax(Q^T K / sqrt(C_q)) V``), the ASCM masks (``M^c = sigmoid(m_c v)``, ``M^s = sigmoid(m_s z)``),
  the channel / spatial distillation losses, the Dice diversity loss and the total ``L_task + alpha (L^c + L^s) +
  lambda L_div`` with alpha = lambda = 1, M = 6.
"""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.data.batch import Batch
from kdbench.errors import ConfigError
from kdbench.losses import (acamkd_diversity_loss, acamkd_loss, kd_loss, trg_context_loss, trg_edge_loss,
                            trg_loss, trg_node_loss)
from kdbench.methods import Progress
from kdbench.methods.acamkd import CrossAttentionFusion, SelectionUnits
from kdbench.methods.trg import sample_tokens, stage_tokens
from kdbench.models import ModelOutput, create_model
from kdbench.models.outputs import run_model
from method_harness import assert_gradients_flow, method_from_config, one_step

# ---------------------------------------------------------------------------------------------- plain Python


def _softmax(row):
    top = max(row)
    e = [math.exp(v - top) for v in row]
    return [v / sum(e) for v in e]


def _normalise(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _edge_loss_loops(student, teacher, k, sigma):
    """TRG edge alignment by loops: L2-normalise, each model's k nearest (self excluded) with Gaussian weights,
    zero elsewhere, softmax of every row over all nodes, KL(teacher row || student row), mean over rows."""
    def rows(tokens):
        t = [_normalise(v) for v in tokens]
        out = []
        for i in range(len(t)):
            d2 = [sum((a - b) ** 2 for a, b in zip(t[i], t[j])) for j in range(len(t))]
            order = sorted((j for j in range(len(t)) if j != i), key=lambda j: d2[j])[:k]
            out.append(_softmax([math.exp(-d2[j] / (2 * sigma)) if j in order else 0.0 for j in range(len(t))]))
        return out

    p_t, p_s = rows(teacher), rows(student)
    return sum(sum(a * math.log(a / b) for a, b in zip(rt, rs)) for rt, rs in zip(p_t, p_s)) / len(p_t)


def _context_loss_loops(student, teacher):
    """TRG contextual loss by loops: per image, row-softmax of F F^T / sqrt(D) in each model's width; MSE."""
    total, count = 0.0, 0
    for s_img, t_img in zip(student, teacher):
        cs = [_softmax([sum(a * b for a, b in zip(u, v)) / math.sqrt(len(u)) for v in s_img]) for u in s_img]
        ct = [_softmax([sum(a * b for a, b in zip(u, v)) / math.sqrt(len(u)) for v in t_img]) for u in t_img]
        for rs, rt in zip(cs, ct):
            for a, b in zip(rs, rt):
                total, count = total + (a - b) ** 2, count + 1
    return total / count


def _node_loss_loops(student, teacher, tau):
    """TRG node alignment by loops: InfoNCE of cosine similarities over tau, positive = the same node."""
    s, t = [_normalise(v) for v in student], [_normalise(v) for v in teacher]
    total = 0.0
    for i in range(len(s)):
        logits = [sum(a * b for a, b in zip(s[i], t[j])) / tau for j in range(len(t))]
        total -= math.log(_softmax(logits)[i])
    return total / len(s)


def _lists(x: torch.Tensor):
    return x.tolist()


# ---------------------------------------------------------------------------------------------- TRG


def test_trg_node_alignment_worked_by_hand():
    """Global relationship (node) InfoNCE: s = (1,0), (0,1); t = (1,0), (1,1); tau 0.5. Cosines: s0.t0 = 1,
    s0.t1 = 1/sqrt2, s1.t0 = 0, s1.t1 = 1/sqrt2, so L = ( -log(e^2 / (e^2 + e^sqrt2))
    - log(e^sqrt2 / (1 + e^sqrt2)) ) / 2 = (0.4425476 + 0.2176217) / 2 = 0.3300847."""
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    want = (-math.log(math.exp(2) / (math.exp(2) + math.exp(math.sqrt(2))))
            - math.log(math.exp(math.sqrt(2)) / (1 + math.exp(math.sqrt(2))))) / 2
    assert want == pytest.approx(0.330084650060132, abs=1e-12)
    assert trg_node_loss(s, t, temperature=0.5).item() == pytest.approx(want, abs=1e-6)
    # scaling a node changes nothing (cosine similarity)
    assert trg_node_loss(3 * s, 0.5 * t, temperature=0.5).item() == pytest.approx(want, abs=1e-6)


def test_trg_edge_alignment_worked_by_hand():
    """Local preserving (edge) loss, k = 1, sigma = 1, on unit tokens at angles (squared distance of unit vectors
    at angle a: 2 - 2 cos a, so an edge weighs exp(-(1 - cos a))). Teacher at 0, 80, 180 degrees: 0 -> 1 (80
    degrees), 1 -> 0 (80 < 100), 2 -> 1 (100 < 180). Student at 0, 40, 90 degrees: 0 -> 1 (40), 1 -> 0 (40 < 50),
    2 -> 1 (50 < 90). Row i: softmax over the 3 nodes of (w at its neighbour, 0 elsewhere); KL(teacher || student)
    averaged over rows. Tokens equal to the teacher's (at any scale) give 0."""
    def at(degrees):
        return [math.cos(math.radians(d)) for d in degrees], [math.sin(math.radians(d)) for d in degrees]

    teacher = torch.tensor(list(zip(*at([0, 80, 180]))))
    student = torch.tensor(list(zip(*at([0, 40, 90]))))
    assert trg_edge_loss(teacher * 2, teacher, neighbours=1, sigma=1.0).item() == pytest.approx(0.0, abs=1e-7)

    def row(angle, neighbour):
        w = math.exp(-(1 - math.cos(math.radians(angle))))
        z = math.exp(w) + 2
        return [math.exp(w) / z if j == neighbour else 1 / z for j in range(3)]

    p_t = [row(80, 1), row(80, 0), row(100, 1)]
    p_s = [row(40, 1), row(40, 0), row(50, 1)]
    want = sum(sum(a * math.log(a / b) for a, b in zip(pt, ps)) for pt, ps in zip(p_t, p_s)) / 3
    assert trg_edge_loss(student, teacher, neighbours=1, sigma=1.0).item() == pytest.approx(want, rel=1e-5)
    assert want == pytest.approx(_edge_loss_loops(_lists(student), _lists(teacher), 1, 1.0), rel=1e-6)


def test_trg_edge_and_context_losses_match_plain_loops():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 4, generator=g)  # widths differ: relations only
    for k, sigma in ((1, 1.0), (3, 0.5), (20, 2.0)):  # 20 > N - 1: every other node is a neighbour
        got = trg_edge_loss(s.flatten(0, 1), t.flatten(0, 1), neighbours=k, sigma=sigma).item()
        want = _edge_loss_loops(_lists(s.flatten(0, 1)), _lists(t.flatten(0, 1)), min(k, 9), sigma)
        assert got == pytest.approx(want, rel=1e-5), (k, sigma)
    assert trg_context_loss(s, t).item() == pytest.approx(_context_loss_loops(_lists(s), _lists(t)), rel=1e-5)
    nodes_s, nodes_t = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
    assert trg_node_loss(nodes_s, nodes_t, 0.2).item() == pytest.approx(
        _node_loss_loops(_lists(nodes_s), _lists(nodes_t), 0.2), rel=1e-5)
    total = trg_loss(s, t, nodes_s, nodes_t, node_temperature=0.2, neighbours=3, sigma=0.5, node_weight=2.0,
                     edge_weight=3.0, context_weight=5.0).item()
    assert total == pytest.approx(2 * _node_loss_loops(_lists(nodes_s), _lists(nodes_t), 0.2)
                                  + 3 * _edge_loss_loops(_lists(s.flatten(0, 1)), _lists(t.flatten(0, 1)), 3, 0.5)
                                  + 5 * _context_loss_loops(_lists(s), _lists(t)), rel=1e-5)


def test_trg_context_loss_worked_by_hand():
    """One image, two tokens of width 1: student (1), (0): F F^T / sqrt1 = [[1, 0], [0, 0]] -> rows
    (e/(e+1), 1/(e+1)) and (1/2, 1/2); teacher (0), (0): both rows (1/2, 1/2). Squared differences of the
    first row: 2 (e/(e+1) - 1/2)^2, of the second 0; mean over 4 entries."""
    s, t = torch.tensor([[[1.0], [0.0]]]), torch.tensor([[[0.0], [0.0]]])
    want = 2 * (math.e / (math.e + 1) - 0.5) ** 2 / 4
    assert trg_context_loss(s, t).item() == pytest.approx(want, rel=1e-6)


def test_trg_tokens_share_positions_and_grids():
    """Maps on different grids are pooled to the smaller one; the same positions are drawn from both models."""
    s_map = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    t_map = torch.arange(2 * 5 * 2 * 2, dtype=torch.float32).reshape(2, 5, 2, 2)
    s_tok, t_tok = stage_tokens(s_map, t_map, patch_size=1)
    assert s_tok.shape == (2, 4, 3) and t_tok.shape == (2, 4, 5)
    # student token 0 of image 0 = the mean of its top-left 2x2 block, channel by channel
    assert s_tok[0, 0].tolist() == [s_map[0, c, :2, :2].mean().item() for c in range(3)]
    assert torch.equal(t_tok[1, 3], t_map[1, :, 1, 1])
    p_tok, _ = stage_tokens(s_map, s_map, patch_size=2)  # 2x2 patches of a 4x4 map: 4 tokens
    assert p_tok.shape == (2, 4, 3) and p_tok[0, 0].tolist() == s_tok[0, 0].tolist()
    # sampling: the same positions in both, per image, without replacement
    torch.manual_seed(0)
    a, b = sample_tokens(s_tok, t_tok + 0, per_image=3)
    torch.manual_seed(0)
    index = torch.rand(2, 4).argsort(1)[:, :3]
    for img in range(2):
        assert len(set(index[img].tolist())) == 3
        for j, pos in enumerate(index[img].tolist()):
            assert torch.equal(a[img, j], s_tok[img, pos]) and torch.equal(b[img, j], t_tok[img, pos])
    assert sample_tokens(s_tok, t_tok, per_image=10)[0] is s_tok  # fewer positions than asked: all of them


def test_trg_method_is_the_sum_of_its_terms_with_a_falling_node_temperature():
    """The total loss ``CE + KD + alpha L_ctx + beta L_edge + gamma L_node`` on given stage maps, the node
    temperature tau_start at the first step, tau_end at the last, linear between."""
    torch.manual_seed(0)
    method = method_from_config("trg", tokens_per_image=3, neighbours=2, node_weight=2.0, edge_weight=3.0,
                                context_weight=5.0, kd_weight=0.5)
    g = torch.Generator().manual_seed(1)
    student = ModelOutput(logits=torch.randn(2, 4, generator=g), stages=[torch.randn(2, 6, 4, 4, generator=g)])
    teacher = ModelOutput(logits=torch.randn(2, 4, generator=g), stages=[torch.randn(2, 8, 2, 2, generator=g)])
    method.build(student, teacher, None)
    assert (method.student_proj.in_features, method.teacher_proj.in_features, method.proj_dim) == (6, 8, 128)
    targets = torch.tensor([1, 3])
    steps = Progress(epoch=1, epochs=2, step=0, steps_per_epoch=3)  # 6 steps: tau at steps 0 and 5
    assert method.node_temperature(steps) == pytest.approx(0.5)
    assert method.node_temperature(Progress(2, 2, 5, 3)) == pytest.approx(0.1)
    assert method.node_temperature(Progress(2, 2, 3, 3)) == pytest.approx(0.5 - 0.4 * 3 / 5)
    torch.manual_seed(7)
    terms = method(student, teacher, Batch(None, targets, torch.arange(2)), Progress(2, 2, 3, 3))
    torch.manual_seed(7)
    s_tok, t_tok = sample_tokens(*stage_tokens(student.stages[0], teacher.stages[0], 1), per_image=3)
    with torch.no_grad():
        s_nodes = method.student_proj(s_tok.flatten(0, 1))
        t_nodes = method.teacher_proj(t_tok.flatten(0, 1))
    tau = 0.5 - 0.4 * 3 / 5
    assert set(terms) == {"ce", "kd", "trg_node", "trg_edge", "trg_context"}
    assert terms["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(student.logits, targets).item())
    assert terms["kd"].item() == pytest.approx(0.5 * kd_loss(student.logits, teacher.logits, 4.0).item())
    assert terms["trg_node"].item() == pytest.approx(2 * _node_loss_loops(_lists(s_nodes), _lists(t_nodes), tau),
                                                     rel=1e-5)
    assert terms["trg_edge"].item() == pytest.approx(
        3 * _edge_loss_loops(_lists(s_tok.flatten(0, 1)), _lists(t_tok.flatten(0, 1)), 2, 1.0), rel=1e-5)
    assert terms["trg_context"].item() == pytest.approx(5 * _context_loss_loops(_lists(s_tok), _lists(t_tok)),
                                                        rel=1e-5)


def test_trg_refuses_a_stage_the_models_do_not_have():
    method = method_from_config("trg", stage=4)
    out = ModelOutput(logits=torch.zeros(1, 2), stages=[torch.zeros(1, 2, 2, 2)] * 3)
    with pytest.raises(ConfigError, match=r"^method\.stage: 4 is out of range for the student's 3 stage maps$"):
        method.build(out, out, None)


def test_trg_takes_vit_tokens_through_the_same_interface(tmp_path):
    """A timm ViT's patch tokens arrive as forward_intermediates' NCHW maps: a ViT student learns from a CNN
    teacher (gradients reach the ViT and both projections)."""
    torch.manual_seed(0)
    vit = create_model("vit_tiny_patch16_224", 10, image_size=32, img_size=32, patch_size=8, depth=2)
    cnn = create_model("resnet8", 10, image_size=32).eval().requires_grad_(False)
    method = method_from_config("trg")
    images = torch.randn(4, 3, 32, 32)
    s_out, t_out = run_model(vit, images, method.needs), run_model(cnn, images, method.needs)
    assert s_out.stages[-1].shape == (4, 192, 4, 4)
    method.build(s_out, t_out, None)
    terms = method(s_out, t_out, Batch(images, torch.arange(4), torch.arange(4)), Progress(1, 1, 0, 1))
    sum(terms.values()).backward()
    assert vit.patch_embed.proj.weight.grad.abs().sum() > 0
    assert method.student_proj.weight.grad.abs().sum() > 0 and method.teacher_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("teacher,student", [("resnet8x4", "resnet8x4"), ("resnet32x4", "ShuffleV2")])
def test_trg_gradients_reach_the_student_and_its_projections(teacher, student, tmp_path):
    assert_gradients_flow(one_step(method_from_config("trg"), tmp_path, teacher=teacher, student=student))


# ---------------------------------------------------------------------------------------------- ACAM-KD


def test_acamkd_masked_imitation_worked_by_hand():
    """Channel and spatial distillation of a 2-channel, 1x2 map: F_T = [[1, 2], [0, 1]], f(F_S) = 0, so the squared
    differences per channel sum to 5 and 1, per position to 1 and 5. Channel mask (0.5, 1):
    L^c = (0.25 * 5 + 1 * 1) / (HW 2 * mass 1.5) = 0.75; spatial mask (1, 0.5): L^s = (1 * 1 + 0.25 * 5) /
    (C 2 * 1.5) = 0.75; total 1.5."""
    t = torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]]])
    s = torch.zeros_like(t)
    channel, spatial = torch.tensor([[[0.5, 1.0]]]), torch.tensor([[[1.0, 0.5]]])
    assert acamkd_loss(t, s, channel, spatial).item() == pytest.approx(1.5, abs=1e-7)
    # two masks each: the mean over masks (the second pair: all-ones masks give the plain means 6/2/2, 6/2/2)
    two_c, two_s = torch.tensor([[[0.5, 1.0], [1.0, 1.0]]]), torch.tensor([[[1.0, 0.5], [1.0, 1.0]]])
    assert acamkd_loss(t, s, two_c, two_s).item() == pytest.approx((0.75 + 1.5) / 2 + (0.75 + 1.5) / 2, abs=1e-7)
    # the batch mean: a second image with zero difference halves it
    t2, s2 = torch.cat([t, t]), torch.cat([s, t])
    assert acamkd_loss(t2, s2, channel.repeat(2, 1, 1), spatial.repeat(2, 1, 1)).item() == pytest.approx(0.75)


def test_acamkd_dice_diversity_worked_by_hand():
    """Dice of ordered pairs of distinct masks: disjoint (1,0), (0,1) -> 0; equal -> 1; (1,0) and (1,1) ->
    2 * 1 / (1 + 2) = 2/3; three masks (1,0), (0,1), (1,1): pairs 0, 2/3, 2/3 (each both ways) -> 4/9."""
    assert acamkd_diversity_loss(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])).item() == pytest.approx(0.0)
    assert acamkd_diversity_loss(torch.tensor([[[0.3, 0.7], [0.3, 0.7]]])).item() == pytest.approx(1.0)
    assert acamkd_diversity_loss(torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])).item() == pytest.approx(2 / 3)
    three = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    assert acamkd_diversity_loss(three).item() == pytest.approx(4 / 9)
    assert acamkd_diversity_loss(torch.tensor([[[0.5, 0.5]]])).item() == 0.0  # one mask: no pair


def _fusion_loops(wq, wk, wv, teacher, student):
    """STCA-FF by loops on one image: teacher (C_T, P_T) and student (C_S, P_S) as nested lists; projection
    matrices as nested lists (out x in). F_fused[:, p] = sum_r softmax_r(q_p . k_r / sqrt(C_q)) v_r."""
    def project(w, x):
        return [[sum(w[o][i] * x[i][p] for i in range(len(x))) for p in range(len(x[0]))] for o in range(len(w))]

    q, k, v = project(wq, teacher), project(wk, student), project(wv, student)
    cq, pt, ps = len(q), len(q[0]), len(k[0])
    fused = [[0.0] * pt for _ in range(len(v))]
    for p in range(pt):
        attn = _softmax([sum(q[c][p] * k[c][r] for c in range(cq)) / math.sqrt(cq) for r in range(ps)])
        for c in range(len(v)):
            fused[c][p] = sum(attn[r] * v[c][r] for r in range(ps))
    return fused


def _masks_loops(channel_units, spatial_units, fused):
    """ASCM by loops: v = spatial mean per channel; M^c[m][k] = sigmoid(m_c[m] v_k); M^s[m][p] =
    sigmoid(sum_k m_s[m][k] fused[k][p])."""
    positions = len(fused[0])
    v = [sum(row) / positions for row in fused]
    mc = [[_sigmoid(u * vk) for vk in v] for u in channel_units]
    ms = [[_sigmoid(sum(u[k] * fused[k][p] for k in range(len(fused)))) for p in range(positions)]
          for u in spatial_units]
    return mc, ms


def test_acamkd_cross_attention_and_masks_match_plain_loops():
    """STCA-FF with the teacher as queries on unequal widths and grids (teacher 4 channels 1x2 -> C_q 2; student
    3 channels 1x3), then the selection units, against loops."""
    g = torch.Generator().manual_seed(5)
    fusion = CrossAttentionFusion(student_channels=3, teacher_channels=4)
    assert (fusion.query.out_channels, fusion.key.out_channels, fusion.value.out_channels) == (2, 2, 4)
    teacher, student = torch.randn(1, 4, 1, 2, generator=g), torch.randn(1, 3, 1, 3, generator=g)
    with torch.no_grad():
        fused = fusion(teacher, student)
    w = lambda conv: conv.weight[:, :, 0, 0].tolist()
    want = _fusion_loops(w(fusion.query), w(fusion.key), w(fusion.value), teacher[0].flatten(1).tolist(),
                         student[0].flatten(1).tolist())
    assert fused.shape == (1, 4, 1, 2)
    torch.testing.assert_close(fused[0].flatten(1), torch.tensor(want), rtol=1e-5, atol=1e-6)

    units = SelectionUnits(channels=4, num_masks=3)
    with torch.no_grad():
        units.channel_units.copy_(torch.tensor([[2.0], [-1.0], [0.5]]))
        units.spatial_units.copy_(torch.randn(3, 4, generator=g))
        channel, spatial = units(fused)
    mc, ms = _masks_loops([2.0, -1.0, 0.5], units.spatial_units.tolist(), want)
    torch.testing.assert_close(channel[0], torch.tensor(mc), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(spatial[0], torch.tensor(ms), rtol=1e-5, atol=1e-6)


def test_acamkd_max_positions_pools_the_students_keys_and_values():
    g = torch.Generator().manual_seed(2)
    fusion = CrossAttentionFusion(4, 4)
    teacher, student = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    with torch.no_grad():
        pooled = fusion(teacher, torch.nn.functional.avg_pool2d(student, 2))
        torch.testing.assert_close(fusion(teacher, student, max_positions=4), pooled)  # 16 > 4: factor 2
        torch.testing.assert_close(fusion(teacher, student, max_positions=5), pooled)  # ceil(sqrt(16 / 5)) = 2
        assert torch.equal(fusion(teacher, student, max_positions=16), fusion(teacher, student))


def test_acamkd_method_total_worked_through_loops():
    """One level, teacher 2 channels 1x2, student 2 channels 1x2 (equal widths: no align convolution), M = 2:
    ``acamkd`` = alpha (L^c + L^s) and ``acamkd_div`` = lambda (Dice(M^c) + Dice(M^s)), every step by loops."""
    torch.manual_seed(0)
    method = method_from_config("acamkd", num_masks=2, weight=1.5, div_weight=0.5)
    g = torch.Generator().manual_seed(9)
    student = ModelOutput(logits=torch.randn(1, 3, generator=g), stages=[torch.randn(1, 2, 1, 2, generator=g)])
    teacher = ModelOutput(logits=torch.randn(1, 3, generator=g), stages=[torch.randn(1, 2, 1, 2, generator=g)])
    method.build(student, teacher, None)
    assert isinstance(method.aligns[0].conv, torch.nn.Identity)
    terms = method(student, teacher, Batch(None, torch.tensor([2]), torch.arange(1)), Progress(1, 1, 0, 1))
    f = method.fusions[0]
    w = lambda conv: conv.weight[:, :, 0, 0].tolist()
    t_map, s_map = teacher.stages[0][0].flatten(1).tolist(), student.stages[0][0].flatten(1).tolist()
    fused = _fusion_loops(w(f.query), w(f.key), w(f.value), t_map, s_map)
    mc, ms = _masks_loops([u[0] for u in method.units[0].channel_units.tolist()],
                          method.units[0].spatial_units.tolist(), fused)
    d2 = [[(a - b) ** 2 for a, b in zip(tr, sr)] for tr, sr in zip(t_map, s_map)]  # (C, P)
    channels, positions = len(d2), len(d2[0])
    lc = sum(sum(m[k] ** 2 * sum(d2[k]) for k in range(channels)) / (positions * sum(m)) for m in mc) / len(mc)
    ls = sum(sum(m[p] ** 2 * sum(d2[k][p] for k in range(channels)) for p in range(positions)) / (channels * sum(m))
             for m in ms) / len(ms)

    def dice(masks):
        pairs = [(i, j) for i in range(len(masks)) for j in range(len(masks)) if i != j]
        return sum(2 * sum(a * b for a, b in zip(masks[i], masks[j]))
                   / (sum(a * a for a in masks[i]) + sum(b * b for b in masks[j])) for i, j in pairs) / len(pairs)

    assert set(terms) == {"ce", "acamkd", "acamkd_div"}
    assert terms["acamkd"].item() == pytest.approx(1.5 * (lc + ls), rel=1e-5)
    assert terms["acamkd_div"].item() == pytest.approx(0.5 * (dice(mc) + dice(ms)), rel=1e-5)
    assert terms["ce"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(student.logits, torch.tensor([2])).item())


def test_acamkd_defaults_and_classification_parts():
    """The paper's alpha = lambda = 1 and M = 6; on classification stage maps of other widths and grids (wrn_16_2
    -> MobileNetV2) the student is aligned by a 1x1 convolution and resized to the teacher's grid, and the masks
    live on the teacher's width."""
    method = method_from_config("acamkd")
    assert method.hparams() == {"ce_weight": 1.0, "weight": 1.0, "div_weight": 1.0, "num_masks": 6, "max_positions": 0}
    images = torch.randn(2, 3, 32, 32)
    t_out = run_model(create_model("wrn_16_2", 10).eval(), images, method.needs)
    s_out = run_model(create_model("MobileNetV2", 10), images, method.needs)
    method.build(s_out, t_out, None)
    assert len(method.fusions) == 4  # the last 4 maps of each (MobileNetV2 has 5)
    assert [a.conv.out_channels for a in method.aligns] == [16, 32, 64, 128]
    assert [tuple(u.spatial_units.shape) for u in method.units] == [(6, 16), (6, 32), (6, 64), (6, 128)]
    aligned = method.aligns[0](s_out.stages[-4], t_out.stages[-4].shape[-2:])
    assert aligned.shape == t_out.stages[-4].shape  # 16x16 student map on the teacher's 32x32 grid


@pytest.mark.parametrize("teacher,student", [("resnet8x4", "resnet8x4"), ("resnet32x4", "ShuffleV2")])
def test_acamkd_gradients_reach_the_student_and_its_units(teacher, student, tmp_path):
    assert_gradients_flow(one_step(method_from_config("acamkd"), tmp_path, teacher=teacher, student=student))
