"""The training engine in-process: precision options, a frozen teacher, and the composed recipe."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module

from kdbench.engine.teacher import provide_teacher, store_dir
from kdbench.engine.trainer import train
from kdbench.models import create_model, load_checkpoint


def compose_cfg(tmp_path, *overrides):
    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[
            "dataset=synthetic", "dataset.train_size=96", "dataset.test_size=32", "student=resnet8",
            "teacher=resnet8", "teacher.train_epochs=1", "trainer.epochs=2", "trainer.batch_size=32",
            "trainer.progress=false", "trainer.device=cpu", "logger.mode=disabled", f"store={tmp_path / 'store'}",
            *overrides])


def test_teacher_is_frozen_and_untouched_by_distillation(tmp_path):
    cfg = compose_cfg(tmp_path, "method=dkd", "method.warmup_epochs=1")
    seen = {}

    def capture(cfg, data, device):
        teacher, info = provide_teacher(cfg, data, device)
        seen["teacher"], seen["before"] = teacher, {k: v.clone() for k, v in teacher.state_dict().items()}
        return teacher, info

    record = train(cfg, tmp_path / "run", teacher_provider=capture)
    assert record["status"] == "completed" and record["teacher"]["params"] > 0
    teacher = seen["teacher"]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    # Weights and BN running statistics are bit-identical after distillation.
    after = teacher.state_dict()
    assert all(torch.equal(seen["before"][k], after[k]) for k in after)
    # The store holds the teacher in the community format, which is what the run loaded.
    stored = load_checkpoint(create_model("resnet8", 10), store_dir(cfg, "synthetic") / "teacher.pth")
    assert all(torch.equal(stored.state_dict()[k], after[k]) for k in after)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert set(state) >= {"model", "method", "optimizer", "scheduler", "epoch", "history", "run_id"}


@pytest.mark.parametrize("options", [["trainer.precision=bf16"], ["trainer.channels_last=true"],
                                     ["optim=adamw", "optim.warmup_epochs=1"]])
def test_precision_and_layout_options_train(tmp_path, options):
    cfg = compose_cfg(tmp_path, "method=kd", *options)
    record = train(cfg, tmp_path / "run", teacher_provider=provide_teacher)
    assert record["status"] == "completed" and record["epochs_run"] == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in record["history"])
    assert record["precision"] == cfg.trainer.precision


def test_multistep_schedule_matches_the_recipe(tmp_path):
    cfg = compose_cfg(tmp_path, "method=ce", "trainer.epochs=4", "optim.milestones=[2,3]", "trainer.max_steps_per_epoch=1")
    record = train(cfg, tmp_path / "run")
    assert [h["lr"] for h in record["history"]] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert record["teacher"] is None


def test_any_timm_model_trains_as_student_and_teacher(tmp_path):
    cfg = compose_cfg(tmp_path, "method=kd", "student.name=resnet10t", "teacher.name=resnet10t", "trainer.epochs=1")
    record = train(cfg, tmp_path / "run", teacher_provider=provide_teacher)
    assert record["status"] == "completed"
    assert record["student"]["resolved"] == "resnet10t" and record["teacher"]["resolved"] == "resnet10t"


def test_pretrained_teacher_comes_from_timm(tmp_path, monkeypatch):
    import kdbench.tasks.classification as classification
    from kdbench.errors import ConfigError

    calls = []

    def fake_create_model(name, num_classes, image_size=32, pretrained=False, role="teacher"):
        calls.append((name, pretrained, role))
        return create_model(name, num_classes, image_size=image_size)  # no download in tests

    monkeypatch.setattr(classification, "create_model", fake_create_model)
    cfg = compose_cfg(tmp_path, "method=kd", "teacher.name=resnet10t", "teacher.pretrained=true", "trainer.epochs=1")
    record = train(cfg, tmp_path / "run", teacher_provider=provide_teacher)
    assert calls == [("resnet8", False, "student"), ("resnet10t", True, "teacher")]
    assert record["teacher"]["checkpoint"] == "timm:resnet10t" and record["teacher"]["top1"] is not None
    assert not (tmp_path / "store").exists()  # nothing trained
    with pytest.raises(ConfigError, match="none are hosted for CIFAR zoo model 'resnet8'"):
        create_model("resnet8", 10, pretrained=True)


@pytest.mark.slow
def test_compiled_student_and_teacher_train(tmp_path):
    """trainer.compile=true: torch.compile of the student step and the teacher forward (slow: compilation)."""
    from omegaconf import OmegaConf, open_dict

    from hydra import compose, initialize_config_module
    from kdbench.engine.teacher import provide_teacher

    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "dataset=synthetic", "dataset.train_size=64", "dataset.test_size=32", "teacher=resnet8", "student=resnet8",
            "teacher.train_epochs=1", "method=kd", "trainer.epochs=1", "trainer.compile=true", "trainer.device=cpu",
            "trainer.batch_size=16", "trainer.progress=false", "logger.mode=disabled", f"store={tmp_path / 'store'}"])
    record = train(cfg, tmp_path / "run", teacher_provider=provide_teacher)
    assert record["status"] == "completed" and record["history"][0]["loss"] > 0
