"""DHO (kdbench/methods/dho.py): the loss pinned to the reference, the (a, b) search, and a semi-supervised run on a
10% labelled split whose selection reads the validation split only."""

from __future__ import annotations

import pytest
import torch

from conftest import FAST, compose_config, read_result, run_cli, write_cifar100
from kdbench.data.semi import UNLABELLED
from kdbench.losses import dho_loss
from kdbench.losses.dho import dho_terms
from kdbench.methods.dho import ALPHAS, BETAS, mixed_probabilities, search_mixture


def _inputs():
    torch.manual_seed(0)
    b, c = 4, 5
    ce_l, kd_l, kd_u = (torch.randn(b, c, dtype=torch.float64) for _ in range(3))
    t_l, t_u = (torch.randn(b, c, dtype=torch.float64) * 3 for _ in range(2))
    return ce_l, kd_l, kd_u, t_l, t_u, torch.tensor([0, 3, 4, 3])


def test_loss_matches_the_reference():
    """Golden values: erjui/DHO @ 846de75, ``train_others.py`` (lines 149-166: CE on the labelled ce-head logits, the two
    batch-mean KL terms at T 2 times T^2, 0.5 / 0.5) on these inputs (float64): 2.8228987362802362; the ImageNet
    script's 1 / 1 weighting (``train_imgnet_semi.py`` line 250): 5.6457974725604725; the terms: CE 2.4879130371233673,
    KD labelled 1.1389293039197743, KD unlabelled 2.0189551315173313."""
    ce_l, kd_l, kd_u, t_l, t_u, labels = _inputs()
    # kdbench's batch: the labelled images, then the unlabelled ones (target -1); the ce head's unlabelled rows unused
    ce = torch.cat([ce_l, torch.randn_like(ce_l) * 10])
    kd, teacher = torch.cat([kd_l, kd_u]), torch.cat([t_l, t_u])
    target = torch.cat([labels, torch.full((4,), UNLABELLED)])
    assert dho_loss(ce, kd, teacher, target).item() == pytest.approx(2.8228987362802362, abs=1e-12)
    assert dho_loss(ce, kd, teacher, target, ce_weight=1.0, kd_weight=1.0).item() == pytest.approx(5.6457974725604725, abs=1e-12)
    terms = dho_terms(ce, kd, teacher, target, ce_weight=1.0, kd_weight=1.0)
    assert [terms[k].item() for k in ("ce", "kd_l", "kd_u")] == pytest.approx(
        [2.4879130371233673, 1.1389293039197743, 2.0189551315173313], abs=1e-12)
    only_labelled = dho_terms(ce_l, kd_l, t_l, labels)
    assert only_labelled["kd_u"].item() == 0.0 and torch.isfinite(only_labelled["kd_l"])


def test_search_takes_the_first_best_in_the_references_order():
    """The grid and order of ``train_others.py`` ``evaluate(search_param=True)``: b outer over (0.5 .. 4), a inner over
    0, 0.05, .., 1; a later point replaces the best only when strictly better."""
    assert len(ALPHAS) == 21 and ALPHAS[1] == 0.05 and ALPHAS[-1] == 1.0 and BETAS == (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0)
    targets = torch.tensor([0, 1])
    ce = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # the ce head is right on both
    kd = torch.tensor([[0.0, 5.0], [5.0, 0.0]])  # the kd head is wrong on both
    alpha, beta, accuracy = search_mixture(ce, kd, targets)
    # at b = 0.5 the kd head is sharp: a must exceed 0.5 to win; the first a doing so is 0.55 (0.5 ties: argmax 0)
    assert (beta, accuracy) == (0.5, 100.0) and alpha == pytest.approx(0.55)
    probabilities = mixed_probabilities(ce, kd, 0.25, 2.0)
    expected = 0.25 * ce.softmax(1) + 0.75 * (kd / 2.0).softmax(1)
    assert torch.allclose(probabilities, expected)


def test_semi_supervised_run_records_split_and_choices(tmp_path, env):
    """A DHO run on a 10% labelled split of CIFAR-format data: the split is recorded, each step sees labelled and
    unlabelled images, (a, b) is chosen on the validation split before each evaluation and recorded."""
    root = write_cifar100(tmp_path / "data", n_train=200, n_test=32, classes=4)
    args = [f"dataset.root={root}", *FAST, "dataset.num_classes=4", "method=dho", "teacher=resnet8", "student=resnet8",
            "trainer.epochs=2", "trainer.max_steps_per_epoch=3", "teacher.train_epochs=1", "logger.mode=disabled",
            "trainer.batch_size=16",
            "dataset.labelled_fraction=0.1", f"hydra.run.dir={tmp_path / 'run'}"]
    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = read_result(tmp_path / "run")
    split = result["dataset"]["split"]
    assert split["validation"] + split["labelled"] + split["unlabelled"] == 200 and split["unlabelled_used"]
    assert 16 <= split["validation"] <= 24 and 14 <= split["labelled"] <= 22  # 10% of every class, rounded per class
    assert result["dataset"]["train_size"] == split["labelled"]
    history = result["history"]
    assert {"ce", "kd_l", "kd_u"} <= set(history[-1]["losses"]) and history[-1]["losses"]["kd_u"] > 0
    for entry in history:
        chosen = entry["selected"]
        assert chosen["alpha"] in ALPHAS and chosen["beta"] in BETAS and 0 <= chosen["validation_top1"] <= 100
    assert result["method"]["selected"] == history[-1]["selected"]
    # the teacher (method ce) trained on the labelled part only, with its own store key
    assert "train_size" not in result["teacher"] and result["teacher"]["checkpoint"].endswith("teacher.pth")


def test_selection_reads_the_validation_split_and_not_the_test_set(tmp_path, cifar_root, monkeypatch):
    """In-process: the outputs ``select_on_validation`` receives are the student's on the validation split (count and
    labels), and the test loader is not iterated while it runs."""
    from kdbench.engine import loop
    from kdbench.engine.teacher import provide_teacher
    from kdbench.engine.trainer import train
    from kdbench.methods.dho import DHO

    seen = []
    original = DHO.select_on_validation

    def spy(self, student, targets):
        seen.append(targets.clone())
        return original(self, student, targets)

    monkeypatch.setattr(DHO, "select_on_validation", spy)
    test_iterations = []
    real_select = loop.select_on_validation

    def guarded(run):
        real_iter = type(run.test_loader).__iter__
        assert run.validation_loader is not run.test_loader

        def counted(self):
            if self is run.test_loader:
                test_iterations.append(1)
            return real_iter(self)

        monkeypatch.setattr(type(run.test_loader), "__iter__", counted)
        try:
            return real_select(run)
        finally:
            monkeypatch.setattr(type(run.test_loader), "__iter__", real_iter)

    monkeypatch.setattr(loop, "select_on_validation", guarded)
    monkeypatch.setenv("KDBENCH_HOME", str(tmp_path / "store"))
    cfg = compose_config(
            f"dataset.root={cifar_root}", *FAST, "method=dho", "teacher=resnet8", "student=resnet8", "trainer.epochs=1",
            "teacher.train_epochs=1", "logger.mode=disabled", "dataset.labelled_fraction=0.5",
            "trainer.max_steps_per_epoch=2")
    record = train(cfg, tmp_path / "run", teacher_provider=provide_teacher)
    assert len(seen) == 1 and test_iterations == []
    assert len(seen[0]) == record["dataset"]["split"]["validation"] > 0
