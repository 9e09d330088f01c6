"""A killed run resumes from its last checkpoint and ends with the history of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST, read_result, run_cli

TIMING = {"images_per_s", "epoch_time_s"}


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cifar_root):
    """One deterministic 3-epoch run (32 steps per epoch) that both interruption tests must reproduce; its
    teacher store is shared with them, so the teacher is trained once."""
    home = tmp_path_factory.mktemp("resume")
    env = dict(os.environ, KDBENCH_HOME=str(home / "store"), WANDB_MODE="offline", WANDB_SILENT="true",
               WANDB_DISABLE_GIT="true", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    common = [f"dataset.root={cifar_root}", "teacher=resnet8", "teacher.train_epochs=1", "student=resnet8",
              "method=kd", "trainer.epochs=3", "trainer.deterministic=true", "seed=3", "logger.mode=disabled",
              *FAST, "trainer.batch_size=8"]
    out = run_cli(common + [f"hydra.run.dir={home / 'whole'}"], home, env)
    assert out.returncode == 0, out.stderr[-3000:]
    return env, common, read_result(home / "whole")


def test_killed_run_resumes_to_the_same_history(tmp_path, uninterrupted):
    env, common, reference = uninterrupted

    killed = tmp_path / "killed"
    script = ("import sys; from kdbench.cli import entry; sys.argv = ['kdbench'] + sys.argv[1:]; entry()")
    proc = subprocess.Popen([sys.executable, "-c", script, *common, f"hydra.run.dir={killed}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists(), "the run finished before it could be killed"
    state = torch.load(last, weights_only=False)
    done, killed_run_id = state["epoch"], state["run_id"]
    assert 1 <= done < 3
    assert not list(killed.rglob("*.tmp")) or all(p.parent.name == "checkpoints" for p in killed.rglob("*.tmp"))

    out = run_cli(common + [f"hydra.run.dir={killed}", "resume=true"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = read_result(killed)
    assert resumed["status"] == "completed" and resumed["epochs_run"] == 3
    assert resumed["run_id"] == killed_run_id
    assert _strip(resumed["history"]) == _strip(reference["history"])
    assert "resuming from" in (killed / "kdbench.log").read_text()


def test_resume_refuses_a_different_configuration(tmp_path, uninterrupted):
    env, common, _ = uninterrupted
    finished = Path(env["KDBENCH_HOME"]).parent / "whole"
    out = run_cli(common + [f"hydra.run.dir={tmp_path / 'other'}", f"resume={finished}", "optim.lr=0.2"], tmp_path, env)
    assert out.returncode == 2
    assert "resume:" in out.stderr and "optim.lr" in out.stderr
    assert not (tmp_path / "other").exists()
    # the same configuration passes the check (the finished run is picked up at its end)
    same = run_cli(common + [f"hydra.run.dir={tmp_path / 'again'}", f"resume={finished}"], tmp_path, env)
    assert same.returncode == 0, same.stderr[-2000:]
    assert read_result(tmp_path / "again")["status"] == "completed"


def test_sigterm_mid_epoch_checkpoints_and_resumes_to_the_same_history(tmp_path, uninterrupted):
    """SIGTERM (pre-emption) stops the run at a step boundary with a mid-epoch checkpoint; resume=true then
    finishes with exactly the uninterrupted history (deterministic mode, 32 steps per epoch)."""
    env, common, reference = uninterrupted
    run_dir = tmp_path / "term"
    script = "import sys; from kdbench.cli import entry; sys.argv = ['kdbench'] + sys.argv[1:]; entry()"
    proc = subprocess.Popen([sys.executable, "-c", script, *common, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not last.is_file():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    r = read_result(run_dir)
    assert r["status"] == "interrupted" and "SIGTERM" in r["failure"], r["failure"]
    state = torch.load(last, weights_only=False)
    assert state["partial"] is not None and 0 < state["partial"]["step"] < 32, state["partial"]
    assert not list(run_dir.rglob("*.tmp"))

    out = run_cli(common + [f"hydra.run.dir={run_dir}", "resume=true"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = read_result(run_dir)
    assert resumed["status"] == "completed" and resumed["run_id"] == state["run_id"]
    assert _strip(resumed["history"]) == _strip(reference["history"])
    log_text = (run_dir / "kdbench.log").read_text()
    assert f"step {state['partial']['step']}" in log_text
