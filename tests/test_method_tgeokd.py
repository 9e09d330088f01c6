"""TGeo-KD (kdbench/methods/tgeokd.py, kdbench/losses/tgeokd.py): the features of Eqs. (6)-(10) and the fused loss
of Eqs. (1)-(3) of Hu et al., ICLR 2024 (arXiv:2312.15112v2) against hand computations in plain Python, the bilevel
gradient of the outer objective (Eqs. 4-5, one look-ahead step) against finite differences, omega's own Adam
against torch.optim.Adam, the engine step, checkpoints, and a CLI run on CIFAR-format data with its validation
split. No reference code is published, so no values are pinned to one. The contract (gradients, teacher,
checkpoints without a validation split): tests/test_methods_contract.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import FAST, compose_config, read_result, run_cli, write_cifar100
from method_harness import make_context, method_from_config, run_step

from kdbench.engine.build import size_method
from kdbench.errors import ConfigError
from kdbench.losses import kd_loss, tgeokd_loss
from kdbench.losses.tgeokd import tgeokd_terms, trilateral_features
from kdbench.methods import Batch, Progress, build_method
from kdbench.methods.tgeokd import FusionRatioNet, TGeoKD, lookahead_validation_loss, teacher_class_probabilities
from kdbench.models import create_model

# --- Eqs. (6)-(10): the trilateral features -------------------------------------------------------------------

S = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]
T = [[0.5, 0.4, 0.1], [0.2, 0.2, 0.6]]
T_BAR = [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]  # per class
Y = [1, 2]


def _features_by_hand(s, t, t_bar_table, y):
    """Eq. (10) for each sample, spelled out: e_sg, e_tg, e_st (Eq. 6), e_tbar_g, e_s_tbar (Eq. 8), then the
    vertices S, T, Tbar, G."""
    rows = []
    for s_i, t_i, y_i in zip(s, t, y):
        c = len(s_i)
        g_i = [1.0 if j == y_i else 0.0 for j in range(c)]
        tb_i = t_bar_table[y_i]
        e_sg = [g_i[j] - s_i[j] for j in range(c)]
        e_tg = [g_i[j] - t_i[j] for j in range(c)]
        e_st = [t_i[j] - s_i[j] for j in range(c)]
        e_tbar_g = [g_i[j] - tb_i[j] for j in range(c)]
        e_s_tbar = [tb_i[j] - s_i[j] for j in range(c)]
        rows.append(e_sg + e_tg + e_st + e_tbar_g + e_s_tbar + list(s_i) + list(t_i) + list(tb_i) + g_i)
    return rows


def test_features_follow_eq10_order_by_hand():
    got = trilateral_features(torch.tensor(S, dtype=torch.float64), torch.tensor(T, dtype=torch.float64),
                              torch.tensor(T_BAR, dtype=torch.float64), torch.tensor(Y))
    assert got.shape == (2, 27)
    # sample 0 (y = 1) worked by hand: G = (0, 1, 0), Tbar_1 = (0.2, 0.5, 0.3)
    row0 = [-0.7, 0.8, -0.1,   -0.5, 0.6, -0.1,   -0.2, 0.2, 0.0,   -0.2, 0.5, -0.3,   -0.5, 0.3, 0.2,
            0.7, 0.2, 0.1,   0.5, 0.4, 0.1,   0.2, 0.5, 0.3,   0.0, 1.0, 0.0]
    assert got[0].tolist() == pytest.approx(row0, abs=1e-15)
    assert got.tolist() == [pytest.approx(r, abs=1e-15) for r in _features_by_hand(S, T, T_BAR, Y)]


def test_features_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        trilateral_features(torch.rand(2, 3), torch.rand(2, 4), torch.rand(3, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class_means"):
        trilateral_features(torch.rand(2, 3), torch.rand(2, 3), torch.rand(3, 4), torch.tensor([0, 1]))


# --- Eqs. (1)-(3): the fused loss -----------------------------------------------------------------------------

def _softmax(z, tau=1.0):
    m = max(z)
    e = [math.exp((v - m) / tau) for v in z]
    return [v / sum(e) for v in e]


def _fused_by_hand(zs, zt, y, alpha, tau):
    """Eq. (3) with Eq. (1) (tau^2 KL(sigma(z_t/tau) || sigma(z_s/tau))) and Eq. (2) (CE at temperature 1)."""
    total = kd_part = ce_part = 0.0
    for zs_i, zt_i, y_i, a_i in zip(zs, zt, y, alpha):
        p_t, p_s = _softmax(zt_i, tau), _softmax(zs_i, tau)
        kd = tau**2 * sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
        ce = -math.log(_softmax(zs_i)[y_i])
        kd_part += a_i * kd
        ce_part += (1 - a_i) * ce
        total += a_i * kd + (1 - a_i) * ce
    n = len(zs)
    return total / n, kd_part / n, ce_part / n


ZS = [[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -2.0, 1.5], [-1.0, 3.0, 0.0, 0.5]]
ZT = [[4.0, 0.0, 1.0, -1.0], [-0.5, 1.0, -1.0, 3.0], [0.0, 2.0, 2.5, -2.0]]
YS, ALPHA = [0, 3, 2], [0.25, 0.9, 0.5]


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_fused_loss_matches_eq3_by_hand(tau):
    zs, zt = torch.tensor(ZS, dtype=torch.float64), torch.tensor(ZT, dtype=torch.float64)
    y, alpha = torch.tensor(YS), torch.tensor(ALPHA, dtype=torch.float64)
    total, kd_part, ce_part = _fused_by_hand(ZS, ZT, YS, ALPHA, tau)
    assert tgeokd_loss(zs, zt, y, alpha, temperature=tau).item() == pytest.approx(total, rel=1e-13)
    kd, ce = tgeokd_terms(zs, zt, y, alpha, temperature=tau)
    assert (kd.item(), ce.item()) == (pytest.approx(kd_part, rel=1e-13), pytest.approx(ce_part, rel=1e-13))


def test_fused_loss_at_alpha_one_and_zero_is_kd_and_ce():
    zs, zt, y = torch.tensor(ZS, dtype=torch.float64), torch.tensor(ZT, dtype=torch.float64), torch.tensor(YS)
    ones = torch.ones(3, dtype=torch.float64)
    assert tgeokd_loss(zs, zt, y, ones).item() == pytest.approx(kd_loss(zs, zt, temperature=4.0).item(), rel=1e-13)
    assert tgeokd_loss(zs, zt, y, 0 * ones).item() == pytest.approx(F.cross_entropy(zs, y).item(), rel=1e-13)


# --- omega's Adam and the bilevel gradient --------------------------------------------------------------------

def test_adam_step_is_torch_adam_and_skips_non_finite_gradients():
    torch.manual_seed(0)
    ours = FusionRatioNet(6, 4)
    ref = [p.detach().clone().requires_grad_(True) for p in ours.net.parameters()]
    adam = torch.optim.Adam(ref, lr=1e-2, weight_decay=1e-3)
    for _ in range(4):
        grads = [torch.randn_like(p) for p in ref]
        for p, g in zip(ref, grads):
            p.grad = g.clone()
        adam.step()
        assert bool(ours.adam_step(grads, lr=1e-2, weight_decay=1e-3))
    for p, r in zip(ours.net.parameters(), ref):
        assert torch.allclose(p, r, rtol=0, atol=1e-6)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    bad = [torch.full_like(p, float("nan")) if i == 1 else torch.randn_like(p) for i, p in enumerate(ref)]
    assert not bool(ours.adam_step(bad, lr=1e-2, weight_decay=1e-3))
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())


class _LinearStudent(nn.Module):
    def __init__(self, dim, classes):
        super().__init__()
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_bilevel_gradient_matches_finite_differences():
    """d/d omega of CE(student(theta - lr * grad_theta L(theta, omega)); val) on a tiny linear student, float64:
    autograd through the look-ahead against central differences over every weight of f_omega."""
    torch.manual_seed(0)
    dim, classes, lr = 5, 3, 0.5
    student = _LinearStudent(dim, classes).double()
    fusion = FusionRatioNet(9 * classes, 4).double()
    x, y = torch.randn(6, dim, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    xv, yv = torch.randn(5, dim, dtype=torch.float64), torch.tensor([2, 0, 1, 1, 0])
    t_logits = torch.randn(6, classes, dtype=torch.float64) * 2
    means = torch.softmax(torch.randn(classes, classes, dtype=torch.float64), dim=1)

    def outer(weights):
        return lookahead_validation_loss(student, fusion, weights, x, y, t_logits, means, xv, yv, 4.0, lr)

    weights = {n: p.detach().clone().requires_grad_(True) for n, p in fusion.weights().items()}
    analytic = torch.autograd.grad(outer(weights), list(weights.values()))
    assert all(p.grad is None for p in student.parameters())  # the look-ahead leaves the student's gradients alone
    eps, worst, largest = 1e-6, 0.0, 0.0
    with torch.no_grad():
        base = {n: w.detach().clone() for n, w in weights.items()}
    for (name, w), grad in zip(base.items(), analytic):
        for k in range(w.numel()):
            plus, minus = {n: v.clone() for n, v in base.items()}, {n: v.clone() for n, v in base.items()}
            plus[name].view(-1)[k] += eps
            minus[name].view(-1)[k] -= eps
            numeric = (outer(plus).item() - outer(minus).item()) / (2 * eps)
            worst = max(worst, abs(numeric - grad.view(-1)[k].item()))
            largest = max(largest, abs(numeric))
    assert largest > 1e-4  # the outer loss does depend on omega
    assert worst < 1e-8 * max(1.0, largest) + 1e-9


# --- in the engine's step -------------------------------------------------------------------------------------

NUM_CLASSES, IMAGE = 10, 32


def _built(tmp_path, validation=True, seed=0, **overrides):
    method = method_from_config("tgeokd", **overrides)
    torch.manual_seed(0)
    teacher = create_model("resnet8", NUM_CLASSES, image_size=IMAGE).eval().requires_grad_(False)
    images = torch.randn(24, 3, IMAGE, IMAGE)
    targets = torch.arange(24) % NUM_CLASSES
    val = (torch.randn(12, 3, IMAGE, IMAGE), torch.arange(12) % NUM_CLASSES) if validation else None
    torch.manual_seed(seed)
    student = create_model("resnet8", NUM_CLASSES, image_size=IMAGE)
    context = make_context(teacher, NUM_CLASSES, images, targets, tmp_path, student=student, validation=val)
    size_method(method, student, teacher, images[:2], context)
    return method, student, teacher, images, targets, val


def _step(pair, index, step, seed=0):
    method, student, teacher, images, targets, _ = pair
    idx = torch.arange(index * 8, index * 8 + 8)
    torch.manual_seed(seed)
    return run_step(method, student, teacher, Batch(images[idx], targets[idx], idx),
                    Progress(epoch=1, epochs=2, step=step, steps_per_epoch=3))


def test_class_means_are_the_teachers_class_average(tmp_path):
    method, _, teacher, images, targets, _ = _built(tmp_path)
    probs = teacher(images).softmax(dim=1)
    for c in range(NUM_CLASSES):
        rows = [probs[i] for i in range(len(targets)) if targets[i] == c]
        assert torch.allclose(method.class_means[c], sum(rows) / len(rows), atol=1e-6)
    # cached per teacher and labels: a second build reads the same file
    assert torch.equal(teacher_class_probabilities(make_context(teacher, NUM_CLASSES, images, targets, tmp_path)),
                       method.class_means)


def test_outer_step_moves_omega_only(tmp_path):
    """One engine step: omega moves (its own Adam), the look-ahead leaves the student's weights, gradients and BN
    statistics as they were, and the returned terms are Eq. (3) with the updated omega's alpha, detached."""
    method, student, teacher, images, targets, val = _built(tmp_path)
    omega0 = method.fusion.flat().clone()
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    method.train()
    student.train()
    method.outer_step(images[:8], targets[:8], teacher(images[:8]))
    assert int(method.outer_steps) == 1 and int(method.val_cursor) == 8 and int(method.fusion.step) == 1
    assert not torch.equal(method.fusion.flat(), omega0)
    assert all(torch.equal(student_before[k], v) for k, v in student.state_dict().items())
    assert all(p.grad is None for p in student.parameters())

    loss, terms = _step((method, student, teacher, images, targets, val), 0, step=0)
    assert int(method.outer_steps) == 2 and set(terms) == {"ce", "kd"}
    assert all(not p.requires_grad and p.grad is None for p in method.fusion.parameters())
    with torch.no_grad():
        s_logits, t_logits = student(images[:8]), teacher(images[:8])
        delta = trilateral_features(s_logits.softmax(1), t_logits.softmax(1), method.class_means, targets[:8])
        alpha = method.fusion.alpha(delta)
    assert 0 < alpha.min() and alpha.max() < 1
    expected = tgeokd_loss(s_logits, t_logits, targets[:8], alpha, temperature=4.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_outer_every_and_the_validation_cursor(tmp_path):
    pair = _built(tmp_path, outer_every=2)
    for step in range(5):
        _step(pair, step % 3, step)
    method = pair[0]
    assert int(method.outer_steps) == 3  # steps 0, 2, 4
    # 12 validation images: 8, then the last 4 of the pass, then 8 of a new pass
    assert int(method.val_cursor) == 8


def test_validation_stream_ignores_the_loaders_batch_size_and_resumes(tmp_path):
    """Outer batches take the training batch's size from the validation split as one stream (the harness loader
    yields batches of 8); a fresh iterator (a resumed run) continues at the saved position."""
    pair = _built(tmp_path)
    method, (val_images, val_targets) = pair[0], pair[5]
    seen = [method._next_validation_batch(5) for _ in range(3)]
    assert [len(t) for _, t in seen] == [5, 5, 2] and int(method.val_cursor) == 12
    assert torch.equal(torch.cat([x for x, _ in seen]), val_images)
    images, targets = method._next_validation_batch(5)
    assert torch.equal(images, val_images[:5]) and int(method.val_cursor) == 5
    method.__dict__["_val_iter"] = None  # as after loading a checkpoint
    images, targets = method._next_validation_batch(4)
    assert torch.equal(images, val_images[5:9]) and torch.equal(targets, val_targets[5:9])


def test_without_a_validation_split_the_outer_step_is_skipped(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="kdbench"):
        pair = _built(tmp_path, validation=False)
    assert "no validation split" in caplog.text
    omega0 = pair[0].fusion.flat().clone()
    _, terms = _step(pair, 0, 0)
    assert torch.isfinite(terms["kd"]) and torch.equal(pair[0].fusion.flat(), omega0)
    assert int(pair[0].outer_steps) == 0


def test_checkpoint_restores_omega_its_adam_state_and_the_validation_position(tmp_path):
    pair = _built(tmp_path / "a")
    for step in range(3):
        _step(pair, step, step, seed=step)
    saved = {"method": {k: v.clone() for k, v in pair[0].state_dict().items()},
             "model": {k: v.clone() for k, v in pair[1].state_dict().items()}}
    assert any(k.startswith("fusion.exp_avg_sq_") for k in saved["method"]) and "val_cursor" in saved["method"]
    restored = _built(tmp_path / "b", seed=5)
    restored[0].load_state_dict(saved["method"])
    restored[1].load_state_dict(saved["model"])
    _, terms = _step(pair, 0, 3, seed=9)
    _, terms_restored = _step(restored, 0, 3, seed=9)
    for name in terms:
        assert torch.equal(terms[name], terms_restored[name]), name
    for key, value in pair[0].state_dict().items():
        assert torch.equal(restored[0].state_dict()[key], value), key


def test_select_on_validation_records_what_omega_learnt(tmp_path):
    pair = _built(tmp_path)
    for step in range(2):
        _step(pair, step, step)
    method = pair[0]
    logits = torch.randn(6, NUM_CLASSES)
    targets = torch.arange(6)
    with torch.inference_mode():
        record = method.select_on_validation(type("Out", (), {"logits": logits})(), targets)
    assert record["outer_steps"] == 2 and record["skipped_outer_steps"] == 0 and record["omega_shift"] > 0
    assert 0 < record["alpha_mean"] < 1
    assert record["validation_ce"] == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    assert float(method.alpha_count) == 0  # the mean restarts after each evaluation


@pytest.mark.parametrize("key, value", [("inner_lr", 0.0), ("hidden_dim", 0), ("outer_every", 0), ("omega_lr", -1.0)])
def test_bad_hyper_parameters_are_one_line_config_errors(key, value):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"_target_": "kdbench.methods.tgeokd.TGeoKD", "name": "tgeokd", key: value})
    with pytest.raises(ConfigError) as error:
        build_method(cfg)
    assert f"method.{key}" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=f"method.{key}"):
        TGeoKD(**{key: value})


# --- through the engine and the CLI ---------------------------------------------------------------------------

def _check_run(result: dict, n_train: int, steps: int) -> None:
    assert result["status"] == "completed", result.get("failure")
    split = result["dataset"]["split"]
    assert 0 < split["validation"] <= 0.15 * n_train and split["validation"] + split["labelled"] == n_train
    assert result["dataset"]["train_size"] == split["labelled"]
    selected = result["history"][-1]["selected"]
    assert selected["outer_steps"] == steps and selected["skipped_outer_steps"] == 0 and selected["omega_shift"] > 0
    assert 0 < selected["alpha_mean"] < 1 and selected["validation_ce"] > 0
    assert set(result["history"][-1]["losses"]) == {"ce", "kd"}
    assert result["student"]["extra_params"] == 9 * 4 * 128 + 128 + 128 + 1  # f_omega: Linear(36, 128), Linear(128, 1)


def test_engine_run_carves_a_validation_split_and_trains_omega(tmp_path, monkeypatch):
    """In-process (the engine's build and loop): the validation split is carved and recorded, the outer steps read
    it, omega moves, and what it learnt is recorded before the evaluation."""
    from kdbench.engine.teacher import provide_teacher
    from kdbench.engine.trainer import train

    root = write_cifar100(tmp_path / "data", n_train=120, n_test=16, classes=4)
    monkeypatch.setenv("KDBENCH_HOME", str(tmp_path / "store"))
    cfg = compose_config(
            f"dataset.root={root}", *FAST, "dataset.num_classes=4", "method=tgeokd", "teacher=resnet8",
            "student=resnet8", "trainer.epochs=1", "trainer.max_steps_per_epoch=2", "teacher.train_epochs=1",
            "logger.mode=disabled", "trainer.batch_size=16")
    _check_run(train(cfg, tmp_path / "run", teacher_provider=provide_teacher), 120, 2)


@pytest.mark.slow
def test_cli_run_splits_the_training_set_and_trains_omega(tmp_path, env):
    root = write_cifar100(tmp_path / "data", n_train=160, n_test=32, classes=4)
    args = [f"dataset.root={root}", *FAST, "dataset.num_classes=4", "method=tgeokd", "teacher=resnet8",
            "student=resnet8", "trainer.epochs=1", "trainer.max_steps_per_epoch=3", "teacher.train_epochs=1",
            "logger.mode=disabled", "trainer.batch_size=16", f"hydra.run.dir={tmp_path / 'run'}"]
    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_run(read_result(tmp_path / "run"), 160, 3)
