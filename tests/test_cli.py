"""The kdbench command end to end, on small files in the real CIFAR-100 format, through the console scripts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import REPO, FAST, read_result, run_cli


def test_help_lists_every_group_and_choice(tmp_path, env):
    out = run_cli(["--help"], tmp_path, env)
    assert out.returncode == 0, out.stderr
    for group in ("dataset:", "teacher:", "student:", "method:", "optim:", "trainer:", "logger:", "experiment:"):
        assert group in out.stdout
    from kdbench.methods import METHODS

    method_line = next(line for line in out.stdout.splitlines() if line.strip().startswith("method:"))
    shipped = {p.stem for p in (REPO / "conf" / "method").glob("*.yaml")}
    assert shipped <= set(METHODS) and all(name in method_line for name in shipped)
    assert "quickstart" in out.stdout


def test_cfg_job_composes_the_cifar_recipe(tmp_path, env):
    out = run_cli(["method=pld", "student=resnet18", "--cfg", "job", "--resolve"], tmp_path, env)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "name: cifar100" in text and "name: resnet32x4" in text and "name: resnet18" in text
    assert "name: pld" in text and "temperature: 1.0" in text
    assert "milestones:\n  - 150\n  - 180\n  - 210" in text
    assert not (tmp_path / "outputs").exists()
    # The light students get the recipe's lr 0.01; every other student 0.05 (the same composition, in-process).
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        assert compose(config_name="config", overrides=["student=ShuffleV2"]).optim.lr == 0.01
        assert compose(config_name="config").optim.lr == 0.05


@pytest.mark.parametrize("args, expected", [
    (["method=foo"], "method: unknown choice 'foo'; valid: acamkd, at, cc, ce,"),
    (["student=resnet9"], "student: unknown choice 'resnet9'"),
    (["student.name=resnet9"], "unknown model 'resnet9'"),
    (["teacher.name=nope"], "teacher.name: unknown model 'nope'"),
    (["trainer.epochs=abc"], "trainer.epochs"),
    (["method.temperature=abc"], "method.temperature: expected float"),
    (["trainer.precision=fp8"], "trainer.precision: unknown value 'fp8'; valid: fp32, bf16, fp16"),
    (["logger.mode=sometimes"], "logger.mode"),
    (["trainer.device=cuda"] if not torch.cuda.is_available() else ["trainer.device=tpu"], "trainer.device: "),
    (["-m", "method=kd,nope"], "method: unknown choice 'nope'"),
    (["-m", "--cfg", "job", "method=kd,pld"], "only one of --run, --multirun, --cfg"),
    (["--cfg", "job", "--bogus"], "unrecognized arguments: --bogus"),
    (["dataset.root=/nonexistent/place"], "dataset.root: no cifar100 data at /nonexistent/place/cifar-100-python"),
    (["teacher.checkpoint=/nonexistent/t.pth"], "teacher.checkpoint: no file at /nonexistent/t.pth"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, cifar_root, args, expected, monkeypatch, capsys):
    """In-process through the console script's entry point (the subprocess test below covers the real script)."""
    from kdbench.cli import entry

    if not any(a.startswith("dataset.root") for a in args):
        args = args + [f"dataset.root={cifar_root}"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["kdbench", *args])
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kdbench: error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_bad_choice_through_the_installed_script(tmp_path, env):
    out = run_cli(["method=foo"], tmp_path, env)
    assert out.returncode == 2
    shipped = ", ".join(sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml")))
    assert out.stderr.strip() == f"kdbench: error: method: unknown choice 'foo'; valid: {shipped}"
    assert not (tmp_path / "outputs").exists()


def test_unreadable_checkpoint_is_one_line_exit_2(tmp_path, env, cifar_root):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a checkpoint")
    out = run_cli([f"dataset.root={cifar_root}", f"teacher.checkpoint={bad}", "teacher=resnet8", "student=resnet8",
                   "trainer.epochs=1", "logger.mode=disabled", *FAST], tmp_path, env)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"kdbench: error: teacher.checkpoint: cannot read checkpoint {bad}")
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.rglob("result.json"))


def test_end_to_end_kd_run_result_wandb_and_table(tmp_path, env, cifar_root):
    run_dir = tmp_path / "run"
    out = run_cli([f"dataset.root={cifar_root}", "teacher=resnet8", "teacher.train_epochs=1", "student=resnet8",
                   "method=kd", "trainer.epochs=2", "seed=3", "logger.mode=offline", f"hydra.run.dir={run_dir}", *FAST],
                  tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = read_result(run_dir)
    assert r["schema"] == 1 and r["status"] == "completed" and r["failure"] is None
    for key in ("run_id", "started_at", "finished_at", "config", "git", "wall_time_s", "images_per_s", "device", "precision"):
        assert key in r
    assert r["dataset"] == {"name": "cifar100", "num_classes": 100, "image_size": 32, "train_size": 256, "test_size": 128,
                            "loader": "device"}
    assert r["student"]["name"] == "resnet8" and r["student"]["resolved"] == "cifar_resnet8"
    assert r["student"]["params"] == sum(p.numel() for p in __import__("kdbench.models", fromlist=["x"]).create_model("resnet8", 100).parameters())
    assert r["teacher"]["name"] == "resnet8" and 0.0 <= r["teacher"]["top1"] <= 100.0
    assert re.search(r"teachers/cifar100/resnet8/e1-s0-r[0-9a-f]{8}/teacher\.pth$", r["teacher"]["checkpoint"])
    assert r["method"] == {"name": "kd", "hparams": {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}}
    assert r["seed"] == 3 and r["epochs"] == 2 and r["epochs_run"] == 2 and len(r["history"]) == 2
    assert set(r["history"][0]["losses"]) == {"ce", "kd"}
    assert r["metrics"]["best_epoch"] in (1, 2) and r["metrics"]["last_top1"] == r["history"][-1]["top1"]
    assert r["config"]["method"]["name"] == "kd" and r["config"]["optim"]["lr"] == 0.05
    # The teacher was trained into the store with the ce recipe, and its own run recorded.
    store_run = Path(r["teacher"]["checkpoint"]).parent / "run" / "result.json"
    assert json.loads(store_run.read_text())["method"]["name"] == "ce"
    # Checkpoints (community format for best) and the W&B offline run directory.
    assert torch.load(run_dir / "checkpoints/best.pt", weights_only=True)["model"]
    offline = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1, list(run_dir.rglob("*"))[:20]
    logged = offline[0].read_bytes()  # the resolved config and per-epoch metrics are in the offline run's log
    assert b"kd_weight" in logged and b"val/top1" in logged and b"train/epoch_kd" in logged
    assert (run_dir / "kdbench.log").read_text().count("epoch ") >= 2
    # kdbench-table reads it.
    table = run_cli([str(tmp_path), "--out", str(tmp_path / "tables")], tmp_path, env, script="kdbench-table")
    assert table.returncode == 0, table.stderr
    assert "resnet8" in table.stdout and "kd" in table.stdout
    assert "kd" in (tmp_path / "tables/leaderboard.md").read_text()


def test_community_checkpoint_teacher_and_failed_run(tmp_path, env, cifar_root):
    from kdbench.models import create_model

    teacher = create_model("resnet8", 100)
    ckpt = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"model": teacher.state_dict(), "epoch": 240, "best_acc": torch.tensor(1.0)}, ckpt)
    run_dir = tmp_path / "nan"
    # An absurd learning rate drives the loss to inf/NaN: the run is recorded as failed, exit code 1.
    out = run_cli([f"dataset.root={cifar_root}", f"teacher.checkpoint={ckpt}", "teacher=resnet8", "student=resnet8",
                   "method=dkd", "optim.lr=1e30", "trainer.epochs=2", "trainer.log_every_n_steps=1",
                   "logger.mode=disabled", f"hydra.run.dir={run_dir}", *FAST], tmp_path, env)
    assert out.returncode == 1, out.stderr[-2000:]
    r = read_result(run_dir)
    assert r["status"] == "failed" and "non-finite loss" in r["failure"]
    assert r["teacher"]["checkpoint"] == str(ckpt) and r["teacher"]["top1"] is not None
    assert not [p for p in run_dir.rglob("*.tmp")]


def test_local_multirun_sweeps_methods_and_seeds(tmp_path, env, cifar_root):
    sweep = tmp_path / "sweep"
    out = run_cli(["-m", "method=kd,dkd", "seed=0,1", f"dataset.root={cifar_root}", "teacher=resnet8",
                   "teacher.train_epochs=1", "student=resnet8", "trainer.epochs=1", "trainer.max_steps_per_epoch=2",
                   "logger.mode=disabled", f"hydra.sweep.dir={sweep}", *FAST], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    results = sorted(sweep.rglob("result.json"))
    assert len(results) == 4
    runs = {(json.loads(p.read_text())["method"]["name"], json.loads(p.read_text())["seed"]) for p in results}
    assert runs == {("kd", 0), ("kd", 1), ("dkd", 0), ("dkd", 1)}
    # The teacher was trained once, for the whole sweep, and the sweep's leaderboard written at the end.
    assert len(list((Path(env["KDBENCH_HOME"]) / "teachers").rglob("teacher.pth"))) == 1
    assert (sweep / "leaderboard.md").is_file() and (sweep / "leaderboard.csv").is_file()


def test_quickstart_preset_prints_teacher_ce_and_kd_rows(tmp_path, env):
    """The README's quickstart, shortened to one epoch each: a multirun (ce, kd) plus the leaderboard."""
    out = run_cli(["experiment=quickstart", "hydra.sweeper.params.seed=0", "trainer.epochs=1", "teacher.train_epochs=1", "trainer.progress=false",
                   "logger.mode=disabled"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = next((tmp_path / "outputs" / "quickstart").iterdir())
    assert sorted(p.parent.name for p in sweep.rglob("result.json")) == ["ce-seed0", "kd-seed0"]
    board = (sweep / "leaderboard.md").read_text()
    for row in ("| digits | wrn_16_2 | — | teacher", "| digits | — | resnet8 | ce", "| digits | wrn_16_2 | resnet8 | kd"):
        assert row in board, board
    assert "kdbench leaderboard" in out.stdout


def test_concurrent_jobs_train_the_teacher_once(tmp_path, env):
    """Four jobs started at once on an empty teacher store and an empty teacher-logit cache: the teacher is
    trained once and the cache built once (each under its file lock), and all four use the same ones."""
    import subprocess
    import sys

    args = ["dataset=synthetic", "dataset.train_size=16", "dataset.test_size=16", "teacher=resnet8",
            "teacher.train_epochs=1", "student=resnet8", "method=kd", "trainer.epochs=1",
            "trainer.max_steps_per_epoch=1", "trainer.teacher_cache=on", "logger.mode=disabled", *FAST]
    script = "import sys; from kdbench.cli import entry; sys.argv = ['kdbench'] + sys.argv[1:]; entry()"
    seeds = range(4)
    procs = [subprocess.Popen([sys.executable, "-c", script, *args, f"seed={s}", f"hydra.run.dir={tmp_path / str(s)}"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for s in seeds]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), logs
    assert sum("not in the store: training it first" in log for log in logs) == 1, logs
    assert sum("; building it (" in log for log in logs) == 1, logs
    teachers = [read_result(tmp_path / str(s))["teacher"] for s in seeds]
    assert len({t["checkpoint"] for t in teachers}) == 1 and len({t["top1"] for t in teachers}) == 1
    assert len({t["logit_cache"] for t in teachers}) == 1 and sum(t["logit_cache_built"] for t in teachers) == 1
    store = Path(env["KDBENCH_HOME"])
    assert len(list(store.rglob("teacher.pth"))) == 1 and len(list(store.rglob("logits.f16"))) == 1
    assert not list(store.rglob("*.tmp"))


def test_headline_command_trains_pld_into_cifar_resnet18(tmp_path, env, cifar_root):
    """`kdbench method=pld student=resnet18` with the default CIFAR-100 recipe and resnet32x4 teacher (shortened)."""
    run_dir = tmp_path / "run"
    out = run_cli(["method=pld", "student=resnet18", f"dataset.root={cifar_root}", "trainer.epochs=1",
                   "teacher.train_epochs=1", "trainer.max_steps_per_epoch=1", "logger.mode=disabled",
                   f"hydra.run.dir={run_dir}", *FAST], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    r = read_result(run_dir)
    assert r["status"] == "completed" and r["dataset"]["name"] == "cifar100"
    assert r["student"]["resolved"] == "cifar_resnet18" and r["student"]["params"] == 11_220_132
    assert r["teacher"]["resolved"] == "cifar_resnet32x4" and r["teacher"]["params"] == 7_433_860
    assert r["method"] == {"name": "pld", "hparams": {"temperature": 1.0, "weight": 1.0}}
    assert set(r["history"][0]["losses"]) == {"pld"}
    assert r["config"]["optim"] | {"milestones": tuple(r["config"]["optim"]["milestones"])} == {
        "name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False, "schedule": "multistep",
        "milestones": (150, 180, 210), "gamma": 0.1, "warmup_epochs": 0, "warmup_iters": 0,
            "warmup_factor": 0.001}
    assert r["config"]["trainer"]["batch_size"] == 64 and r["config"]["trainer"]["epochs"] == 1


def test_glob_sweeps_are_expanded_and_checked(tmp_path, env):
    """A glob sweep goes through the preflight: each match is composed and validated; an empty match is an error."""
    out = run_cli(["-m", "method=glob(c*)", "dataset.root=/nonexistent"], tmp_path, env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("kdbench: error: dataset.root:"), out.stderr
    out = run_cli(["-m", "experiment=glob(cifar100/res5*)", "method=ce"], tmp_path, env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "experiment: glob(cifar100/res5*) matches none of the options" in out.stderr, out.stderr
