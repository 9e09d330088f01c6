"""Sweeps through Hydra's submitit launcher (local processes), pre-emption with requeue, and 2-process DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import FAST, read_result, run_cli

SMALL = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=128", "logger.mode=disabled", *FAST]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_submitit_local_sweep_survives_preemption_and_requeue(tmp_path, env):
    """Three jobs through hydra/launcher=local; once the first checkpoint exists every running task gets
    submitit's pre-emption signal: it checkpoints, submitit requeues it, and the requeued job resumes from
    that checkpoint. All three end completed, each with its full history, and a leaderboard is written."""
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=local", *SMALL, "dataset.train_size=128", "student=resnet8", "method=ce", "seed=0,1,2",
            "trainer.epochs=3", "trainer.batch_size=8", f"hydra.sweep.dir={sweep}"]
    cmd = [sys.executable, "-c", "import sys; from kdbench.cli import entry; sys.argv = ['kdbench'] + sys.argv[1:]; entry()", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(sweep.glob("*/checkpoints/last.pt")):
        time.sleep(0.05)
    if proc.poll() is not None:
        raise AssertionError(f"the sweep ended before any checkpoint: {proc.communicate()[0][-3000:]}")
    controllers = [int(p.name) for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    signalled = 0
    for pid in controllers:
        for task in _children(pid):
            os.kill(task, signal.SIGUSR2)
            signalled += 1
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert signalled >= 1
    runs = sorted(p for p in sweep.iterdir() if (p / "result.json").is_file())
    assert len(runs) == 3, out[-3000:]
    for run in runs:
        r = read_result(run)
        assert r["status"] == "completed" and r["epochs_run"] == 3, (run, r["failure"])
    logs = "".join((run / "kdbench.log").read_text() for run in runs)
    assert "requeued job: resuming from" in logs, out[-3000:]
    assert (sweep / "leaderboard.md").is_file()


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path, env):
    """torchrun, 2 processes (gloo), global batch 64 = 2 x 32: the same global batches and augmentations as one
    process with batch 64; only BN statistics (per rank) and summation order differ."""
    common = [*SMALL, "dataset.train_size=512", "teacher=resnet8", "teacher.train_epochs=1", "student=resnet8",
              "method=kd", "trainer.epochs=2", "trainer.deterministic=true", "seed=2"]
    one = tmp_path / "one"
    out = run_cli(common + [f"hydra.run.dir={one}"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kdbench.cli",
           *common, f"hydra.run.dir={two}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    a, b = read_result(one), read_result(two)
    assert b["status"] == "completed" and b["config"]["distributed"] == {"world_size": 2, "batch_per_rank": 32}
    for x, y in zip(a["history"], b["history"]):
        assert abs(x["loss"] - y["loss"]) <= 0.02 * abs(x["loss"]), (x["loss"], y["loss"])
        assert abs(x["top1"] - y["top1"]) <= 3.0, (x["top1"], y["top1"])
    # rank 0 alone wrote the run directory; the other rank left nothing behind
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert json.loads((two / "result.json").read_text())["teacher"]["top1"] == a["teacher"]["top1"]
