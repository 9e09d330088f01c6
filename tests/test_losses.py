"""Tests for kdbench.losses: golden values pinned to the reference implementations,
plus mathematical properties (CE limits, invariances, gradients, stability)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdbench.losses import dkd_loss, kd_loss, plackett_luce_loss, pld_loss
from kdbench.losses.pld import teacher_optimal_permutation

F64 = torch.float64
F32 = torch.float32



# ---------------------------------------------------------------------------
# Fixed inputs
# ---------------------------------------------------------------------------
# Case A: moderate logits, B=4, C=6. Rows 0 and 1: teacher argmax == target;
# rows 2 and 3: teacher argmax (2 and 4) differs from the target (1 and 2).
S_A = [
    [1.2, -0.5, 0.3, 2.0, -1.1, 0.7],
    [0.1, 0.4, -0.9, 1.5, 0.0, -0.3],
    [-1.0, 2.2, 0.5, -0.2, 1.1, 0.9],
    [0.6, -0.7, 1.8, 0.2, -0.4, 1.3],
]
T_A = [
    [2.5, -1.0, 0.8, 1.9, -0.6, 0.2],
    [0.3, 1.7, -1.2, 2.4, 0.5, -0.8],
    [-0.5, 1.6, 2.1, 0.4, 0.9, -1.3],
    [1.1, 0.2, 0.7, -0.9, 3.0, 1.4],
]
Y_A = [0, 3, 1, 2]

# Case B: large logits (|z| up to 170), B=4, C=5. Teacher argmax [0, 4, 2, 2]
# vs targets [0, 1, 3, 2] (rows 1 and 2 disagree).
S_B = [
    [120.0, -80.0, 35.0, 90.0, -150.0],
    [-60.0, 140.0, 10.0, -25.0, 75.0],
    [30.0, -110.0, 95.0, 160.0, -40.0],
    [-130.0, 55.0, 85.0, -15.0, 100.0],
]
T_B = [
    [150.0, -60.0, 20.0, 110.0, -120.0],
    [-40.0, 70.0, 25.0, -90.0, 130.0],
    [45.0, -100.0, 170.0, 60.0, -20.0],
    [-110.0, 35.0, 140.0, 5.0, 80.0],
]
Y_B = [0, 1, 3, 2]

CASES = {"A": (S_A, T_A, Y_A), "B": (S_B, T_B, Y_B)}


def _inputs(case: str, dtype=F64, scale: float = 1.0):
    s, t, y = CASES[case]
    return (
        torch.tensor(s, dtype=dtype) * scale,
        torch.tensor(t, dtype=dtype) * scale,
        torch.tensor(y, dtype=torch.long),
    )


# ---------------------------------------------------------------------------
# Golden values
# ---------------------------------------------------------------------------
# Computed in float64 by running the reference functions themselves on the
# inputs above (megvii-research/mdistiller @ a08d46f10d6102bd6e3f258ca5ac880b020ea259):
#   repo megvii-research/mdistiller, file mdistiller/distillers/KD.py,
#   function kd_loss(logits_student, logits_teacher, temperature)
KD_GOLDEN = {
    # (case, temperature): value
    ("A", 1.0): 0.5762354374578789,
    ("A", 2.0): 0.5997172577168195,
    ("A", 4.0): 0.5884666513917911,
    ("B", 1.0): 36.250000076475594,
    ("B", 2.0): 72.50055322517028,
    ("B", 4.0): 145.09454591762366,
}

#   repo megvii-research/mdistiller, file mdistiller/distillers/DKD.py,
#   function dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature)
DKD_GOLDEN = {
    # (case, alpha, beta, temperature): value
    ("A", 1.0, 8.0, 4.0): 4.617961361110643,
    ("A", 1.0, 1.0, 1.0): 0.6668474842576881,
    ("A", 0.5, 2.0, 2.0): 1.1840128005146524,
    ("A", 2.0, 0.0, 4.0): 0.26228467691569346,
    ("A", 0.0, 1.0, 4.0): 0.5608523778315996,
    ("B", 1.0, 8.0, 4.0): 145.09458701017698,
    ("B", 1.0, 1.0, 1.0): 36.250000076475594,
    ("B", 0.5, 2.0, 2.0): 36.25027661258745,
    ("B", 2.0, 0.0, 4.0): 290.1890904328229,
    ("B", 0.0, 1.0, 4.0): 5.224220689146536e-06,
}

# No code repository is published for PLD; the official code is the listing in
# Appendix C of Bassam, Zhu & Bian, "PLD: A Choice-Theoretic List-Wise Knowledge
# Distillation", arXiv:2506.12542v3, function
#   plackett_luce_loss(student_logits, teacher_logits, labels, temperature)
# (with create_adjusted_ranking; its undefined helper prepare_for_classification
# taken as the identity for (B, C) inputs), run in float64 on the inputs above.
PLD_GOLDEN = {
    # (case, temperature): value
    ("A", 1.0): 1.2551458680058958,
    ("A", 4.0): 0.988076098501729,
    ("A", 0.5): 1.433532471470499,
    ("B", 1.0): 3.750000076475594,
    ("B", 4.0): 3.7499989293272895,
    ("B", 0.5): 3.750000076475594,
}

# Case B scaled by 10 (|z| up to 1700), same sources, float64 reference runs:
# mdistiller kd_loss T=4 -> 1450.0; mdistiller dkd_loss (1, 8, T=4) -> 1450.0 and
# (1, 8, T=1) -> 362.5; PLD Appendix C listing tau=1 -> 37.5.
# (The same mdistiller dkd_loss in float32 returns inf (T=4) and nan (T=1),
# because it takes torch.log of an underflowed probability.)
LARGE_GOLDEN = {"kd_T4": 1450.0, "dkd_T4": 1450.0, "dkd_T1": 362.5, "pld_tau1": 37.5}


@pytest.mark.parametrize("key", sorted(KD_GOLDEN))
def test_kd_golden(key):
    case, temperature = key
    s, t, _ = _inputs(case)
    got = kd_loss(s, t, temperature=temperature)
    assert got.dtype == F64 and got.dim() == 0
    assert got.item() == pytest.approx(KD_GOLDEN[key], rel=1e-12, abs=1e-14)
    s32, t32, _ = _inputs(case, F32)
    assert kd_loss(s32, t32, temperature=temperature).item() == pytest.approx(
        KD_GOLDEN[key], rel=1e-5, abs=1e-5
    )


@pytest.mark.parametrize("key", sorted(DKD_GOLDEN))
def test_dkd_golden(key):
    case, alpha, beta, temperature = key
    s, t, y = _inputs(case)
    got = dkd_loss(s, t, y, alpha=alpha, beta=beta, temperature=temperature)
    assert got.dtype == F64 and got.dim() == 0
    assert got.item() == pytest.approx(DKD_GOLDEN[key], rel=1e-9, abs=1e-14)
    s32, t32, _ = _inputs(case, F32)
    got32 = dkd_loss(s32, t32, y, alpha=alpha, beta=beta, temperature=temperature)
    assert got32.item() == pytest.approx(DKD_GOLDEN[key], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("key", sorted(PLD_GOLDEN))
def test_pld_golden(key):
    case, temperature = key
    s, t, y = _inputs(case)
    got = pld_loss(s, t, y, temperature=temperature)
    assert got.dtype == F64 and got.dim() == 0
    assert got.item() == pytest.approx(PLD_GOLDEN[key], rel=1e-12, abs=1e-14)
    # Independent check: the loop-over-ranks implementation below.
    assert got.item() == pytest.approx(_pld_loop(s, t, y, temperature), rel=1e-12)
    s32, t32, _ = _inputs(case, F32)
    assert pld_loss(s32, t32, y, temperature=temperature).item() == pytest.approx(
        PLD_GOLDEN[key], rel=1e-5, abs=1e-5
    )


def test_dkd_golden_target_mask_offset():
    # mdistiller masks the target class out of NCKD by subtracting 1000 from the
    # temperature-scaled logit, not by -inf. Row 0's teacher target logit (1500)
    # survives that offset, so the reference's NCKD is ~500 here, where a true
    # -inf mask would give 0.2577. Values from mdistiller/distillers/DKD.py
    # dkd_loss (megvii-research/mdistiller), float64, T = 1:
    #   (alpha=0, beta=1) -> 500.10092494825574, (alpha=1, beta=8) -> 4001.965100732076
    s = torch.tensor([[1.0, 0.5, -1.0], [0.3, 1.0, -2.0]], dtype=F64)
    t = torch.tensor([[1500.0, 2.0, 0.0], [0.5, -1.0, 1.5]], dtype=F64)
    y = torch.tensor([0, 2])
    got = dkd_loss(s, t, y, alpha=0.0, beta=1.0, temperature=1.0)
    assert got.item() == pytest.approx(500.10092494825574, rel=1e-12)
    got = dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=1.0)
    assert got.item() == pytest.approx(4001.965100732076, rel=1e-12)


def test_defaults_match_references():
    s, t, y = _inputs("A")
    assert kd_loss(s, t).item() == pytest.approx(KD_GOLDEN[("A", 4.0)], rel=1e-12)
    assert dkd_loss(s, t, y).item() == pytest.approx(DKD_GOLDEN[("A", 1.0, 8.0, 4.0)], rel=1e-9)
    assert pld_loss(s, t, y).item() == pytest.approx(PLD_GOLDEN[("A", 1.0)], rel=1e-12)


# ---------------------------------------------------------------------------
# PLD: independent derivations
# ---------------------------------------------------------------------------
def _pld_loop(student, teacher, target, tau):
    """Straight transcription of the PLD formula with Python loops and math."""
    total = 0.0
    n_rows, n_cls = student.shape
    for b in range(n_rows):
        s = student[b].tolist()
        t = teacher[b].tolist()
        y = int(target[b])
        perm = [y] + sorted((c for c in range(n_cls) if c != y), key=lambda c: -t[c])
        t_max = max(t)
        z = sum(math.exp((tc - t_max) / tau) for tc in t)
        q = [math.exp((tc - t_max) / tau) / z for tc in t]
        for k in range(n_cls):
            rest = [s[perm[l]] for l in range(k, n_cls)]
            m = max(rest)
            lse = m + math.log(sum(math.exp(x - m) for x in rest))
            total += q[perm[k]] * (lse - s[perm[k]])
    return total / n_rows


def test_pld_hand_computed_three_classes():
    # C = 3, target y = 1.
    # teacher t = (ln 1, ln 2, ln 5) -> q = softmax(t) = (1/8, 2/8, 5/8)
    # permutation: label first, then descending teacher: pi = (1, 2, 0)
    # weights per rank: (q_1, q_2, q_0) = (2/8, 5/8, 1/8)
    # student s = (ln 1, ln 3, ln 4) -> exp(s) = (1, 3, 4)
    # rank 1: log(3 + 4 + 1) - log 3 = log(8/3) = 0.980829...
    # rank 2: log(4 + 1)     - log 4 = log(5/4) = 0.223144...
    # rank 3: log(1)         - log 1 = 0
    # loss = 2/8 * log(8/3) + 5/8 * log(5/4) + 1/8 * 0
    #      = 0.2452073... + 0.1394647... = 0.3846720328243126
    expected = 0.25 * math.log(8 / 3) + 0.625 * math.log(5 / 4)
    assert expected == pytest.approx(0.3846720328243126, rel=1e-15)
    s = torch.tensor([[0.0, math.log(3.0), math.log(4.0)]], dtype=F64)
    t = torch.tensor([[0.0, math.log(2.0), math.log(5.0)]], dtype=F64)
    y = torch.tensor([1])
    assert teacher_optimal_permutation(t, y).tolist() == [[1, 2, 0]]
    assert pld_loss(s, t, y).item() == pytest.approx(expected, rel=1e-14)
    assert _pld_loop(s, t, y, 1.0) == pytest.approx(expected, rel=1e-14)


def test_pld_matches_loop_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    for n_cls, scale in [(2, 1.0), (7, 3.0), (10, 0.3)]:
        s = torch.randn(5, n_cls, generator=g, dtype=F64) * scale
        t = torch.randn(5, n_cls, generator=g, dtype=F64) * scale
        y = torch.randint(0, n_cls, (5,), generator=g)
        for tau in (0.5, 1.0, 4.0):
            assert pld_loss(s, t, y, temperature=tau).item() == pytest.approx(
                _pld_loop(s, t, y, tau), rel=1e-12
            )


def test_teacher_optimal_permutation():
    t = torch.tensor([[0.5, 3.0, -1.0, 2.0], [1.0, 1.0, 1.0, 0.0]])
    y = torch.tensor([2, 2])
    # row 0: label 2, then 1 (3.0), 3 (2.0), 0 (0.5); row 1: ties -> lower index first
    assert teacher_optimal_permutation(t, y).tolist() == [[2, 1, 3, 0], [2, 0, 1, 3]]
    assert teacher_optimal_permutation(t, y.view(-1, 1)).tolist() == [[2, 1, 3, 0], [2, 0, 1, 3]]


def test_pld_calls_plackett_luce_loss_with_teacher_weights():
    s, t, y = _inputs("A")
    perm = teacher_optimal_permutation(t, y)
    w = F.softmax(t / 2.0, dim=1).gather(1, perm)
    assert plackett_luce_loss(s, perm, w).item() == pytest.approx(
        pld_loss(s, t, y, temperature=2.0).item(), rel=1e-14
    )


# ---------------------------------------------------------------------------
# PLD properties
# ---------------------------------------------------------------------------
def test_plackett_luce_one_hot_rank1_weights_is_cross_entropy():
    s, t, y = _inputs("A")
    perm = teacher_optimal_permutation(t, y)  # label at rank 1
    w = torch.zeros_like(s)
    w[:, 0] = 1.0
    ce = F.cross_entropy(s, y)
    assert plackett_luce_loss(s, perm, w).item() == pytest.approx(ce.item(), rel=1e-14)
    # Any permutation with the label first gives the same.
    other = torch.tensor([[yy] + [c for c in range(5, -1, -1) if c != yy] for yy in y.tolist()])
    assert plackett_luce_loss(s, other, w).item() == pytest.approx(ce.item(), rel=1e-14)


def test_plackett_luce_uniform_weights_is_listmle():
    s, t, y = _inputs("A")
    perm = teacher_optimal_permutation(t, y)
    w = torch.full_like(s, 1.0)
    ranked = s.gather(1, perm)
    nll = 0.0
    for k in range(s.shape[1]):  # -log P(perm | s) under Plackett-Luce
        nll = nll + torch.logsumexp(ranked[:, k:], dim=1) - ranked[:, k]
    assert plackett_luce_loss(s, perm, w).item() == pytest.approx(nll.mean().item(), rel=1e-13)


def test_pld_small_temperature_is_cross_entropy_when_teacher_agrees():
    s, t, y = _inputs("A")
    s, t, y = s[:2], t[:2], y[:2]  # rows where teacher argmax == target
    assert torch.equal(t.argmax(1), y)
    ce = F.cross_entropy(s, y).item()
    assert pld_loss(s, t, y, temperature=1e-3).item() == pytest.approx(ce, rel=1e-12)
    # Monotone approach as tau shrinks.
    gaps = [abs(pld_loss(s, t, y, temperature=tau).item() - ce) for tau in (1.0, 0.3, 0.1)]
    assert gaps[0] > gaps[1] > gaps[2]


def test_pld_small_temperature_when_teacher_disagrees_weights_rank2():
    # Teacher argmax != target: all weight goes to the teacher's top class, which
    # sits at rank 2 (right after the label).
    s, t, y = _inputs("A")
    s, t, y = s[2:], t[2:], y[2:]
    top = t.argmax(1)
    assert not torch.equal(top, y)
    mask = F.one_hot(y, 6).bool()
    expected = (
        torch.logsumexp(s.masked_fill(mask, float("-inf")), dim=1)
        - s.gather(1, top[:, None]).squeeze(1)
    ).mean()
    assert pld_loss(s, t, y, temperature=1e-3).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("case", ["A", "B"])
def test_pld_invariant_to_per_row_shift(case):
    s, t, y = _inputs(case)
    shift = torch.tensor([[3.0], [-7.5], [100.0], [0.25]], dtype=F64)
    base = pld_loss(s, t, y)
    assert pld_loss(s + shift, t, y).item() == pytest.approx(base.item(), rel=1e-12, abs=1e-12)
    # The teacher side is shift invariant too (softmax weights, ranking).
    assert pld_loss(s, t - shift, y).item() == pytest.approx(base.item(), rel=1e-12, abs=1e-12)


def test_pld_gradcheck():
    s, t, y = _inputs("A")
    s, t, y = s[1:3].clone().requires_grad_(True), t[1:3], y[1:3]
    assert torch.autograd.gradcheck(lambda x: pld_loss(x, t, y, temperature=2.0), (s,))
    perm = teacher_optimal_permutation(t, y)
    w = torch.rand(2, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda x: plackett_luce_loss(x, perm, w), (s,))


# ---------------------------------------------------------------------------
# KD / DKD properties
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_zero_when_student_equals_teacher(temperature):
    _, t, _ = _inputs("A")
    assert abs(kd_loss(t.clone(), t, temperature=temperature).item()) < 1e-14


def test_dkd_sanity():
    s, t, y = _inputs("A")
    assert dkd_loss(s, t, y, alpha=0.0, beta=0.0).item() == 0.0
    # Both KL terms vanish when student == teacher.
    assert abs(dkd_loss(t.clone(), t, y, alpha=1.0, beta=8.0).item()) < 1e-13
    # Linear in (alpha, beta).
    tckd = dkd_loss(s, t, y, alpha=1.0, beta=0.0)
    nckd = dkd_loss(s, t, y, alpha=0.0, beta=1.0)
    assert dkd_loss(s, t, y, alpha=0.7, beta=3.0).item() == pytest.approx(
        (0.7 * tckd + 3.0 * nckd).item(), rel=1e-13
    )
    assert tckd.item() > 0 and nckd.item() > 0
    # Target is accepted as (B,) or (B, 1), like the reference's reshape(-1).
    assert dkd_loss(s, t, y.view(-1, 1)).item() == dkd_loss(s, t, y).item()


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_dkd_reformulates_kd_per_sample(temperature):
    # DKD paper, Eq. (4)/(5): KD = TCKD + (1 - p^T_target) * NCKD, per sample.
    # With alpha = 1 and beta = 1 - p^T_target on a single sample, DKD equals KD.
    s, t, y = _inputs("A")
    for b in range(4):
        sb, tb, yb = s[b : b + 1], t[b : b + 1], y[b : b + 1]
        p_target = F.softmax(tb / temperature, dim=1)[0, yb].item()
        dkd = dkd_loss(sb, tb, yb, alpha=1.0, beta=1.0 - p_target, temperature=temperature)
        kd = kd_loss(sb, tb, temperature=temperature)
        assert dkd.item() == pytest.approx(kd.item(), rel=1e-12)


# ---------------------------------------------------------------------------
# Shared properties: gradients, stability, precision
# ---------------------------------------------------------------------------
LOSSES = {
    "kd": lambda s, t, y: kd_loss(s, t),
    "dkd": lambda s, t, y: dkd_loss(s, t, y),
    "dkd_T1": lambda s, t, y: dkd_loss(s, t, y, temperature=1.0),
    "pld": lambda s, t, y: pld_loss(s, t, y),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_reach_student_only(name):
    # The references compute teacher logits under torch.no_grad(); these pure
    # functions detach the teacher logits, so a teacher tensor that requires
    # grad receives none.
    s, t, y = _inputs("A")
    s.requires_grad_(True)
    t.requires_grad_(True)
    LOSSES[name](s, t, y).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck_student(name):
    s, t, y = _inputs("A")
    s, t, y = s[1:3].clone().requires_grad_(True), t[1:3], y[1:3]  # one row of each kind
    assert torch.autograd.gradcheck(lambda x: LOSSES[name](x, t, y), (s,))


@pytest.mark.parametrize("dtype", [F32, F64])
def test_finite_and_correct_for_logits_of_magnitude_1e3(dtype):
    s, t, y = _inputs("B", dtype, scale=10.0)  # |z| up to 1700
    assert s.abs().max() >= 1e3
    s.requires_grad_(True)
    values = {
        "kd_T4": kd_loss(s, t, temperature=4.0),
        "dkd_T4": dkd_loss(s, t, y, temperature=4.0),
        "dkd_T1": dkd_loss(s, t, y, temperature=1.0),
        "pld_tau1": pld_loss(s, t, y, temperature=1.0),
    }
    for key, value in values.items():
        assert torch.isfinite(value), key
        assert value.item() == pytest.approx(LARGE_GOLDEN[key], rel=1e-6), key
        (grad,) = torch.autograd.grad(value, s)
        assert torch.isfinite(grad).all(), key


def test_finite_for_huge_random_logits():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(8, 10, generator=g) * 1e3
    t = torch.randn(8, 10, generator=g) * 1e3
    y = torch.randint(0, 10, (8,), generator=g)
    s.requires_grad_(True)
    for name, fn in LOSSES.items():
        value = fn(s, t, y)
        (grad,) = torch.autograd.grad(value, s)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), name


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_float32_agrees_with_float64(name):
    g = torch.Generator().manual_seed(7)
    s = torch.randn(16, 10, generator=g, dtype=F64) * 3
    t = torch.randn(16, 10, generator=g, dtype=F64) * 3
    y = torch.randint(0, 10, (16,), generator=g)
    v64 = LOSSES[name](s, t, y)
    v32 = LOSSES[name](s.float(), t.float(), y)
    assert v32.dtype == F32 and v64.dtype == F64
    assert v32.item() == pytest.approx(v64.item(), rel=1e-5, abs=1e-6)


def test_shape_errors():
    s, t, y = _inputs("A")
    with pytest.raises(ValueError):
        kd_loss(s, t[:, :5])
    with pytest.raises(ValueError):
        dkd_loss(s, t, y[:3])
    with pytest.raises(ValueError):
        pld_loss(s, t[:3], y)
    with pytest.raises(ValueError):
        plackett_luce_loss(s, torch.zeros(4, 5, dtype=torch.long), torch.zeros(4, 6, dtype=F64))
