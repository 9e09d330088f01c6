"""engine/loop.py and engine/optim.py schedules: iteration-based runs (an evaluation every N iterations, a
learning-rate schedule stepped per iteration with Detectron2's linear warm-up) and exact resume mid-interval."""

from __future__ import annotations

import bisect
import signal

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from kdbench.engine import loop
from kdbench.engine.optim import build_scheduler
from kdbench.engine.trainer import train
from kdbench.engine.preemption import Preempted

TIMINGS = ("images_per_s", "epoch_time_s")


def compose_cfg(tmp_path, *overrides):
    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=[
            "dataset=synthetic", "dataset.train_size=96", "dataset.test_size=32", "student=resnet8", "method=ce",
            "trainer.batch_size=32", "trainer.progress=false", "trainer.device=cpu", "trainer.deterministic=true",
            "logger.mode=disabled", f"store={tmp_path / 'store'}", *overrides])


def detectron2_lr(base: float, it: int, milestones, gamma: float, warmup: int, factor: float) -> float:
    """WarmupMultiStepLR (Detectron2 solver/lr_scheduler.py, linear warm-up) written out by hand."""
    alpha = it / warmup if it < warmup else 1.0
    ramp = factor * (1 - alpha) + alpha if it < warmup else 1.0
    return base * ramp * gamma ** bisect.bisect_right(milestones, it)


def test_iteration_schedule_is_detectron2s_warmup_multistep():
    cfg = OmegaConf.create({"schedule": "multistep", "milestones": [6, 9], "gamma": 0.1, "warmup_iters": 4,
                            "warmup_factor": 0.001})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.02)
    scheduler = build_scheduler(cfg, optimizer, total=12, unit="iteration")
    got = []
    for _ in range(12):
        got.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert got == pytest.approx([detectron2_lr(0.02, it, [6, 9], 0.1, 4, 0.001) for it in range(12)], rel=1e-9)


def test_iteration_run_evaluates_every_n_iterations_across_epochs(tmp_path):
    """96 images / batch 32 = 3 steps per epoch; 7 iterations, an evaluation every 3: at 3, 6 and 7."""
    cfg = compose_cfg(tmp_path, "trainer.iterations=7", "trainer.eval_every=3", "optim.milestones=[5]",
                      "optim.warmup_iters=2")
    record = train(cfg, tmp_path / "run")
    assert record["status"] == "completed"
    assert [h["iteration"] for h in record["history"]] == [3, 6, 7]
    # the learning rate at the start of each interval, as the schedule gives it per iteration
    assert [h["lr"] for h in record["history"]] == pytest.approx(
        [detectron2_lr(0.05, it, [5], 0.1, 2, 0.001) for it in (0, 3, 6)])
    assert record["metrics"]["best_epoch"] in (1, 2, 3) and record["epochs_run"] == 3


def test_iteration_run_resumes_mid_interval_to_the_same_history(tmp_path, monkeypatch):
    overrides = ("trainer.iterations=8", "trainer.eval_every=5", "optim.warmup_iters=3", "optim.milestones=[6]")
    whole = train(compose_cfg(tmp_path, *overrides), tmp_path / "whole")

    steps = {"n": 0}

    def stop_after_four():  # a stop signal arriving after the 4th optimiser step (mid-interval, mid-epoch 2)
        steps["n"] += 1
        return signal.SIGTERM if steps["n"] >= 4 else None

    monkeypatch.setattr(loop.preemption, "requested", stop_after_four)
    with pytest.raises(Preempted):
        train(compose_cfg(tmp_path, *overrides), tmp_path / "cut")
    state = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 0 and state["partial"]["step"] == 4
    monkeypatch.setattr(loop.preemption, "requested", lambda: None)
    resumed = train(compose_cfg(tmp_path, *overrides, "resume=true"), tmp_path / "cut")

    def strip(history):
        return [{k: v for k, v in h.items() if k not in TIMINGS} for h in history]

    assert strip(resumed["history"]) == strip(whole["history"])
    assert resumed["run_id"] == whole["run_id"] or resumed["run_id"] == state["run_id"]


def test_bad_iteration_settings_are_config_errors():
    from kdbench.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.iterations"):
        loop.schedule_of(OmegaConf.create({"iterations": 5, "eval_every": -1, "epochs": 1}), 3)
    with pytest.raises(ConfigError, match="trainer.epochs"):
        loop.schedule_of(OmegaConf.create({"iterations": None, "epochs": 0}), 3)
