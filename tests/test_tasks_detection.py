"""kdbench/tasks/detection.py and kdbench/models/detection.py: the detection KD step on a synthetic COCO set written
by the tests (drawn shapes, non-contiguous category ids, crowd boxes, images without boxes) and loaded through the
real path; the CLI run of a coco preset; exact resume of an iteration-based detection run; data parallelism."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from conftest import FAST, read_result, run_cli, write_coco
from kdbench.data import build_data
from kdbench.engine import loop
from kdbench.engine.build import size_method
from kdbench.engine.optim import OPTIMIZERS
from kdbench.engine.preemption import Preempted
from kdbench.engine.step import TrainStep
from kdbench.engine.teacher import provide_teacher
from kdbench.engine.trainer import train
from kdbench.errors import ConfigError
from kdbench.methods import BuildContext, Progress, build_method
from kdbench.tasks import task_of
from kdbench.tasks.detection import DETECTIONS_FILE

# CPU-sized detector: 96 px short side, 64 RoIs per image, a 64-wide box head, 4 classes
SMALL = ["dataset.num_classes=4", "dataset.train_sizes=[96]", "dataset.image_size=96", "dataset.max_size=160",
         "dataset.detector.rois_per_image=64", "dataset.detector.representation_size=64",
         "dataset.detector.rpn_post_nms_train=100", "dataset.num_workers=0", "student.pretrained=false",
         "trainer.batch_size=4", "trainer.eval_batch_size=8", "optim.warmup_iters=2", "optim.milestones=[4]",
         "logger.mode=disabled", "trainer.progress=false", "trainer.device=cpu"]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """The synthetic COCO set and a seeded R18-FPN teacher in torchvision's state_dict format."""
    root = tmp_path_factory.mktemp("coco")
    write_coco(root / "coco")
    cfg = compose_cfg(root, "method=ce")
    torch.manual_seed(7)
    teacher = task_of(cfg.dataset).create_model("resnet18", 4, 96, role="teacher")
    torch.save(teacher.state_dict(), root / "teacher.pth")  # a bare state_dict, as torchvision saves detectors
    return root


def compose_cfg(root, *overrides):
    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[
            "experiment=coco/r101_r18", f"dataset.root={root / 'coco'}", "teacher.name=resnet18",
            f"teacher.checkpoint={root / 'teacher.pth'}", f"store={root / 'store'}", *SMALL, *overrides])


def _pair(coco, method_name="dkd"):
    cfg = compose_cfg(coco, f"method={method_name}")
    task, data = task_of(cfg.dataset), build_data(cfg.dataset)
    torch.manual_seed(0)
    student = task.create_model("resnet18", 4, 96)
    teacher, _ = provide_teacher(cfg, data, torch.device("cpu"))
    loader = task.loaders(cfg, data, __import__("kdbench").distributed.World(), 4, torch.device("cpu"), {}, False)[0]
    return cfg, task, student, teacher, build_method(cfg.method), next(iter(loader))


def test_teacher_classifies_exactly_the_students_sampled_rois(coco, monkeypatch):
    cfg, task, student, teacher, method, batch = _pair(coco)
    monkeypatch.setattr(teacher, "rpn", None)  # the teacher's RPN is never used
    student.train()
    out, scored, losses = task.forward_student(student, batch, method)
    proposals = out.paired["proposals"]
    assert sum(len(p) for p in proposals) == out.logits.shape[0] == scored.targets.shape[0] == 4 * 64
    assert out.logits.shape[1] == 5 and set(losses) == task.loss_names  # background + 4 classes
    assert scored.targets.min() >= 0 and (scored.targets == 0).any() and (scored.targets > 0).any()
    with torch.no_grad():
        t_out = task.forward_teacher(teacher, batch, out, method)
        # by hand: the teacher's FPN on the student's transformed images, its box head on the student's RoIs
        features = teacher.backbone(out.paired["images"])
        pooled = teacher.roi_heads.box_roi_pool(features, proposals, out.paired["image_sizes"])
        logits, _ = teacher.roi_heads.box_predictor(teacher.roi_heads.box_head(pooled))
    torch.testing.assert_close(t_out.logits, logits, rtol=0, atol=0)
    assert [s.shape for s in t_out.stages] == [s.shape for s in out.stages]  # FPN p2..p6, level for level


def test_gradients_reach_the_student_and_never_the_teacher(coco):
    cfg, task, student, teacher, method, batch = _pair(coco)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    params = [p for p in student.parameters() if p.requires_grad]
    step = TrainStep(student, method, torch.optim.SGD(params, lr=0.01), OPTIMIZERS["sgd"], torch.device("cpu"),
                     teacher=teacher, task=task)
    step.train()
    loss, terms = step(batch, Progress(epoch=1, epochs=1, step=0, steps_per_epoch=1))
    assert torch.isfinite(loss) and set(terms) == {"rpn_objectness", "rpn_box", "box_reg", "ce", "dkd"}
    assert step.task_terms == {"ce", "rpn_objectness", "rpn_box", "box_reg"}  # DOT would see these as the task
    assert student.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    assert student.backbone.body.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert not student.backbone.body.conv1.weight.requires_grad  # stem and layer1 frozen (FREEZE_AT 2)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_acamkd_masks_the_fpn_levels_and_trains_its_units_with_the_student(coco, tmp_path):
    """ACAM-KD through the detection step: one fusion and one set of selection units per FPN level p2..p6 (256
    channels: no align convolution), its terms beside the detector's own, gradients to the student's FPN and to
    every part of the method, none to the teacher."""
    cfg, task, student, teacher, method, batch = _pair(coco, "acamkd")
    context = BuildContext(num_classes=4, train_targets=torch.zeros(0, dtype=torch.long), device=torch.device("cpu"),
                           teacher=teacher, teacher_fingerprint=None, cache_dir=tmp_path,
                           plain_train_batches=lambda: iter(()))
    torch.manual_seed(0)
    size_method(method, student, teacher, [batch], context, task)
    assert len(method.fusions) == len(method.units) == 5
    assert all(isinstance(a.conv, torch.nn.Identity) for a in method.aligns)
    assert [tuple(u.spatial_units.shape) for u in method.units] == [(6, 256)] * 5
    params = [p for p in student.parameters() if p.requires_grad] + list(method.parameters())
    step = TrainStep(student, method, torch.optim.SGD(params, lr=0.0), OPTIMIZERS["sgd"], torch.device("cpu"),
                     teacher=teacher, task=task)
    step.train()
    loss, terms = step(batch, Progress(epoch=1, epochs=1, step=0, steps_per_epoch=1))
    assert set(terms) == {"rpn_objectness", "rpn_box", "box_reg", "ce", "acamkd", "acamkd_div"}
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
    assert student.backbone.fpn.layer_blocks[0][0].weight.grad.abs().sum() > 0  # p2's output convolution
    for name, p in method.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


@pytest.mark.slow  # ~12 s here: a whole run, the teacher measurement and an evaluation included
def test_acamkd_runs_end_to_end_on_detection(coco, tmp_path):
    r = train(compose_cfg(coco, "method=acamkd", "trainer.iterations=2", "trainer.eval_every=2"), tmp_path / "run",
              teacher_provider=provide_teacher)
    assert r["status"] == "completed" and [h["iteration"] for h in r["history"]] == [2]
    losses = r["history"][-1]["losses"]
    assert {"ce", "acamkd", "acamkd_div"} <= set(losses) and all(v == v for v in losses.values())
    assert r["student"]["extra_params"] > 0 and r["metrics"]["last_ap"] is not None
    assert r["method"]["hparams"] == {"ce_weight": 1.0, "weight": 1.0, "div_weight": 1.0, "num_masks": 6,
                                      "max_positions": 0}


@pytest.mark.parametrize("method,reason", [("crd", "training images as such"), ("nd", "training images as such"),
                                           ("mixkd", "changes or adds to the batch"), ("ofd", "preact"),
                                           ("ofa", "image-level logits")])
def test_methods_a_detector_cannot_serve_are_refused(coco, tmp_path, method, reason):
    with pytest.raises(ConfigError, match=reason):
        train(compose_cfg(coco, f"method={method}", "trainer.iterations=1"), tmp_path / "run",
              teacher_provider=provide_teacher)
    assert not (tmp_path / "run" / "result.json").exists()


def test_cli_preset_trains_evaluates_and_lands_in_the_table(coco, tmp_path, env):
    run_dir = tmp_path / "run"
    out = run_cli(["experiment=coco/r101_r18", "method=dkd", f"dataset.root={coco / 'coco'}", "teacher.name=resnet18",
                   f"teacher.checkpoint={coco / 'teacher.pth'}", *SMALL, "trainer.iterations=4",
                   "trainer.eval_every=2", f"hydra.run.dir={run_dir}"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = read_result(run_dir)
    assert r["status"] == "completed" and [h["iteration"] for h in r["history"]] == [2, 4]
    assert set(r["metrics"]) >= {"last_ap", "last_ap50", "last_ap75", "last_ap_s", "last_ap_m", "last_ap_l", "best_ap"}
    assert r["method"]["hparams"] == {"ce_weight": 1.0, "alpha": 1.0, "beta": 0.25, "temperature": 1.0,
                                      "warmup_epochs": 0}
    assert r["student"]["resolved"] == "fasterrcnn_resnet18_fpn" and "ap" in r["teacher"]
    detections = json.loads((run_dir / DETECTIONS_FILE).read_text())
    assert detections and {"image_id", "category_id", "bbox", "score"} <= set(detections[0])
    assert {d["category_id"] for d in detections} <= {1, 3, 7, 12}  # COCO ids, not contiguous labels
    table = run_cli([str(run_dir), "--format", "md"], tmp_path, env, script="kdbench-table")
    assert table.returncode == 0, table.stderr
    boards = [p.read_text() for p in run_dir.glob("leaderboard*.md")]
    assert any("dkd" in board and "AP" in board for board in boards), boards


@pytest.mark.slow  # ~40 s here; the default suite resumes classification runs mid-epoch (test_engine_resume.py)
def test_detection_run_resumes_mid_interval_to_the_same_history(coco, tmp_path, monkeypatch):
    overrides = ("method=kd", "trainer.iterations=4", "trainer.eval_every=2", "trainer.deterministic=true")
    whole = train(compose_cfg(coco, *overrides), tmp_path / "whole", teacher_provider=provide_teacher)
    calls = {"n": 0}

    def stop_after_three():
        calls["n"] += 1
        return signal.SIGTERM if calls["n"] >= 3 else None

    monkeypatch.setattr(loop.preemption, "requested", stop_after_three)
    with pytest.raises(Preempted):
        train(compose_cfg(coco, *overrides), tmp_path / "cut", teacher_provider=provide_teacher)
    monkeypatch.setattr(loop.preemption, "requested", lambda: None)
    resumed = train(compose_cfg(coco, *overrides, "resume=true"), tmp_path / "cut", teacher_provider=provide_teacher)
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("images_per_s", "epoch_time_s")} for e in h]
    assert strip(resumed["history"]) == strip(whole["history"])


@pytest.mark.slow
def test_detection_under_two_cpu_processes(coco, tmp_path, env):
    """torchrun, 2 processes (gloo): a detection run trains, evaluates every rank's images, and rank 0 alone
    writes the run directory."""
    common = ["experiment=coco/r101_r18", "method=dkd", f"dataset.root={coco / 'coco'}", "teacher.name=resnet18",
              f"teacher.checkpoint={coco / 'teacher.pth'}", *SMALL, "trainer.iterations=2"]
    run_dir = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kdbench.cli",
           *common, f"hydra.run.dir={run_dir}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    r = read_result(run_dir)
    assert r["status"] == "completed" and r["config"]["distributed"] == {"world_size": 2, "batch_per_rank": 2}
    assert r["metrics"]["last_ap"] is not None and (run_dir / DETECTIONS_FILE).is_file()
    # every val image was scored once, whichever rank evaluated it
    ids = {d["image_id"] for d in json.loads((run_dir / DETECTIONS_FILE).read_text())}
    assert ids <= {5000 + 3 * i for i in range(16)}
