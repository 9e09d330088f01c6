"""Checkpoint faults: the previous last.pt survives until a checked new one is in place; a damaged last.pt at
resume falls back to it (one warning line) or is a one-line error; a run never starts over silently on earlier
work; an unwritable or full output directory is an error before training, a failed record mid-run."""

from __future__ import annotations

import errno
import json
import logging
import shutil

import pytest
import torch
from hydra import compose, initialize_config_module

from kdbench.engine import state as state_mod
from kdbench.engine.state import LAST, PREVIOUS, TrainState, check_resume_source, read_checkpoint
from kdbench.engine.trainer import train
from kdbench.errors import ConfigError, TrainingFailed

TIMINGS = ("images_per_s", "epoch_time_s")


def small(tmp_path, *overrides) -> list[str]:
    return ["dataset=synthetic", "dataset.train_size=64", "dataset.test_size=32", "student=resnet8", "method=ce",
            "trainer.batch_size=32", "trainer.epochs=2", "trainer.progress=false", "trainer.device=cpu",
            "trainer.deterministic=true", "logger.mode=disabled", f"store={tmp_path / 'store'}", *overrides]


def compose_cfg(tmp_path, *overrides):
    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=small(tmp_path, *overrides))


def strip(history):
    return [{k: v for k, v in h.items() if k not in TIMINGS} for h in history]


def save(path, epoch, weight=None):
    model = torch.nn.Linear(64, 64)
    if weight is not None:
        torch.nn.init.constant_(model.weight, weight)
    TrainState(epoch=epoch, history=[{"top1": float(epoch)}] * epoch).save(path, {"seed": 0}, {"model": model})


def flip_middle_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "flipped byte": flip_middle_byte,
    "empty": lambda p: p.write_bytes(b""),
    "missing": lambda p: p.unlink(),
}


def test_save_keeps_the_previous_checkpoint_beside_the_new_one(tmp_path):
    last = tmp_path / "checkpoints" / LAST
    save(last, 1)
    assert not (last.parent / PREVIOUS).exists()
    save(last, 2)
    save(last, 3)
    assert torch.load(last, weights_only=False)["epoch"] == 3
    assert torch.load(last.parent / PREVIOUS, weights_only=False)["epoch"] == 2
    assert sorted(p.name for p in last.parent.iterdir()) == sorted([LAST, PREVIOUS])  # no temporary files left


def test_a_write_that_reads_back_damaged_replaces_nothing(tmp_path, monkeypatch):
    last = tmp_path / LAST
    save(last, 1)
    save(last, 2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_save = torch.save

    def save_then_damage(obj, f):  # the bytes on disk are not what was written
        real_save(obj, f)
        f.flush()
        f.seek(f.tell() // 2)
        f.write(b"\xff\x00\xff\x00")

    monkeypatch.setattr(torch, "save", save_then_damage)
    with pytest.raises(OSError, match="read back damaged"):
        save(last, 3, weight=0.5)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_last_falls_back_to_the_previous_with_one_warning(tmp_path, damage, caplog):
    last = tmp_path / LAST
    save(last, 1)
    save(last, 2)
    DAMAGE[damage](last)
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        used, saved = read_checkpoint(last)
    assert used == tmp_path / PREVIOUS and saved["epoch"] == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith(f"resume: {last} is ")
    assert lines[0].endswith(f"; falling back to the previous checkpoint {used} (epoch 1)")


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_with_no_readable_checkpoint_resume_is_a_one_line_error_naming_the_files(tmp_path, damage):
    last = tmp_path / LAST
    save(last, 1)
    DAMAGE[damage](last)
    with pytest.raises(ConfigError) as e:
        read_checkpoint(last)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"resume: no readable checkpoint: {last} is ")
    assert f"no {PREVIOUS} to fall back to" in message
    save(last, 1)
    save(last, 2)
    for path in (last, tmp_path / PREVIOUS):
        DAMAGE[damage](path)
    with pytest.raises(ConfigError, match=f"{last} is .*; {tmp_path / PREVIOUS} is "):
        read_checkpoint(last)


def test_a_damaged_last_never_displaces_a_sound_previous(tmp_path):
    last = tmp_path / LAST
    save(last, 1)
    save(last, 2)
    flip_middle_byte(last)
    save(last, 3)  # after a resume from last.prev.pt (epoch 1), the run checkpoints again
    assert torch.load(last.parent / PREVIOUS, weights_only=False)["epoch"] == 1
    assert read_checkpoint(last)[1]["epoch"] == 3


def test_run_resumes_from_the_previous_checkpoint_when_last_is_corrupted(tmp_path, caplog):
    whole = train(compose_cfg(tmp_path, "trainer.epochs=3"), tmp_path / "whole")
    cut = tmp_path / "cut"
    # two epochs of the three-epoch run: stop it after its second checkpoint
    calls = {"n": 0}
    real_checkpoint = state_mod.TrainState.save

    def stop_after_two(self, path, config, modules):
        real_checkpoint(self, path, config, modules)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(state_mod.TrainState, "save", stop_after_two)
        with pytest.raises(KeyboardInterrupt):
            train(compose_cfg(tmp_path, "trainer.epochs=3"), cut)
    flip_middle_byte(cut / "checkpoints" / LAST)
    # the preflight accepts the run directory (the previous checkpoint reads), without a warning of its own
    check_resume_source(compose_cfg(tmp_path, "trainer.epochs=3", f"resume={cut}"))
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        resumed = train(compose_cfg(tmp_path, "trainer.epochs=3", "resume=true"), cut)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].endswith(PREVIOUS + " (epoch 1)") and "falling back" in warnings[0]
    assert resumed["status"] == "completed" and strip(resumed["history"]) == strip(whole["history"])


def test_resume_true_over_a_history_without_checkpoints_is_refused(tmp_path, caplog):
    run_dir = tmp_path / "run"
    train(compose_cfg(tmp_path, "trainer.epochs=1"), run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    with pytest.raises(ConfigError) as e:
        train(compose_cfg(tmp_path, "trainer.epochs=1", "resume=true"), run_dir)
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(f"resume: {run_dir} holds result.json with 1 evaluated epoch(s) but no checkpoint")
    assert len(json.loads((run_dir / "result.json").read_text())["history"]) == 1  # untouched
    # an explicit fresh start over earlier work says so
    train(compose_cfg(tmp_path, "trainer.epochs=1"), tmp_path / "again")
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        train(compose_cfg(tmp_path, "trainer.epochs=1"), tmp_path / "again")
    assert any("already holds checkpoints/last.pt" in r.getMessage() and "starting over" in r.getMessage()
               for r in caplog.records)


def test_unwritable_output_directory_is_an_error_before_anything_is_built(tmp_path):
    (tmp_path / "a-file").write_text("")
    run_dir = tmp_path / "a-file" / "run"
    built = []
    with pytest.raises(ConfigError) as e:
        train(compose_cfg(tmp_path, "method=kd", "teacher=resnet8"), run_dir,
              teacher_provider=lambda *a: built.append(a))
    assert "\n" not in str(e.value) and str(e.value).startswith(f"output directory {run_dir} cannot be written (")
    assert not built and not (tmp_path / "store").exists()


def test_full_output_directory_is_an_error_before_training(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state_mod, "check_writable", full)
    with pytest.raises(ConfigError, match=r"cannot be written \(No space left on device\)"):
        train(compose_cfg(tmp_path), tmp_path / "run")
    monkeypatch.undo()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(state_mod.shutil, "disk_usage", lambda p: usage._replace(free=1024))
    with pytest.raises(ConfigError, match=r"has 0 MiB free; this run's checkpoints need about \d+ MiB"):
        train(compose_cfg(tmp_path), tmp_path / "run2")
    assert not (tmp_path / "run2" / "checkpoints").exists()


def test_disk_full_mid_run_is_a_failed_record_with_the_reason(tmp_path, monkeypatch):
    real_save = state_mod.save_torch
    calls = {"n": 0}

    def full_on_second(path, obj, **kw):  # the second last.pt finds the disk full
        calls["n"] += path.name == LAST
        if path.name == LAST and calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, obj, **kw)

    monkeypatch.setattr(state_mod, "save_torch", full_on_second)
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingFailed, match="cannot write checkpoint .*last.pt: No space left on device"):
        train(compose_cfg(tmp_path), run_dir)
    record = json.loads((run_dir / "result.json").read_text())
    assert record["status"] == "failed"
    assert record["failure"] == f"cannot write checkpoint {run_dir / 'checkpoints' / LAST}: No space left on device"
    assert read_checkpoint(run_dir / "checkpoints" / LAST)[1]["epoch"] == 1  # the last good one is still there


KILLED_CACHE_BUILDER = """
import json, os, signal, sys
from hydra import compose, initialize_config_module
from kdbench.engine import logit_cache
from kdbench.engine.teacher import provide_teacher
from kdbench.engine.trainer import train

real, calls = logit_cache.crop_flip_batch, []


def second_chunk_kills(*args):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)


logit_cache.crop_flip_batch = second_chunk_kills
with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
    cfg = compose(config_name="config", overrides=json.loads(sys.argv[2]))
train(cfg, sys.argv[1], teacher_provider=provide_teacher)
"""


class Killed(BaseException):
    """Stands for SIGKILL where no clean-up code is in the way."""


def test_a_killed_builder_leaves_nothing_taken_for_complete(tmp_path, monkeypatch, caplog):
    """A job stopped while it writes the teacher's store entry, then one killed (SIGKILL) half-way through the
    teacher-logit cache: neither half-done entry is taken for complete; the next job finishes the teacher's entry,
    rebuilds the cache and trains."""
    import subprocess
    import sys

    from kdbench.engine import teacher

    overrides = small(tmp_path, "method=kd", "teacher=resnet8", "teacher.train_epochs=1", "trainer.epochs=1",
                      "trainer.teacher_cache=on", "dataset.train_size=16", "dataset.test_size=16")  # 2 cache chunks
    store = tmp_path / "store"

    def entry():
        return {p.name for p in (store / "teachers").rglob("*") if p.name in ("teacher.pth", "meta.json")}

    def stopped_at_second(real):
        def write(path, *args, **kwargs):
            if path.name in ("teacher.pth", "meta.json") and entry():
                raise Killed
            return real(path, *args, **kwargs)
        return write

    with monkeypatch.context() as mp:  # the second of the entry's two files is never written
        mp.setattr(teacher, "save_torch", stopped_at_second(teacher.save_torch))
        mp.setattr(teacher, "write_json", stopped_at_second(teacher.write_json))
        with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        with pytest.raises(Killed):
            train(cfg, tmp_path / "first", teacher_provider=teacher.provide_teacher)
    assert len(entry()) == 1
    out = subprocess.run([sys.executable, "-c", KILLED_CACHE_BUILDER, str(tmp_path / "second"), json.dumps(overrides)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == -9, out.stderr[-3000:]  # killed in the cache build, the teacher's entry completed
    assert entry() == {"teacher.pth", "meta.json"}
    cache_dir = next(store.rglob("teacher_logits/*"))
    assert not (cache_dir / "meta.json").exists() and list(cache_dir.glob(".logits.f16.*.tmp"))
    with caplog.at_level(logging.INFO, logger="kdbench"):
        record = train(cfg, tmp_path / "third", teacher_provider=teacher.provide_teacher)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert record["status"] == "completed" and record["teacher"]["logit_cache_built"]
    assert "building it" in messages and "training it first" not in messages
    assert not list(store.rglob("*.tmp"))


def test_a_result_json_that_cannot_be_written_never_hides_the_failure(tmp_path, monkeypatch, caplog):
    """A full disk when the failure record is written: the run still raises TrainingFailed with its own reason,
    and one error line says the record could not be written."""
    import logging

    import pytest
    from hydra import compose, initialize_config_module

    import kdbench.engine.record as record_module
    from kdbench.engine import loop
    from kdbench.engine.trainer import train
    from kdbench.errors import TrainingFailed

    with initialize_config_module(config_module="kdbench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "dataset=synthetic", "dataset.train_size=32", "dataset.test_size=16", "student=resnet8", "method=ce",
            "trainer.epochs=1", "trainer.batch_size=16", "trainer.progress=false", "trainer.device=cpu",
            "logger.mode=disabled", f"store={tmp_path / 'store'}"])

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    def breaks(*args, **kwargs):
        raise TrainingFailed("non-finite loss at epoch 1, step 1")

    monkeypatch.setattr(record_module, "write_record", full_disk)
    monkeypatch.setattr(loop, "_evaluate_and_record", breaks)
    with caplog.at_level(logging.ERROR, logger="kdbench"), pytest.raises(TrainingFailed, match="non-finite"):
        train(cfg, tmp_path / "run")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "non-finite loss" in errors[0]
