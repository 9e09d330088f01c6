"""One run, start (or checkpoint) to result, in three phases: build (engine/build.py) -> loop (engine/loop.py:
train, evaluate, checkpoint, log; each step is engine/step.py) -> record (engine/record.py).

The engine knows nothing about any method, optimiser or task: it asks the method what it needs, the optimiser
strategy what it can do, and the task how to load and score. Data parallel (torch.distributed DDP) when launched
with several processes; a stop signal (pre-emption) checkpoints mid-interval, and a resumed run continues from
that exact step.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .. import distributed
from ..errors import ConfigError, TrainingFailed
from ..results.record import utc_now
from . import preemption
from .build import Run, build
from .loop import train_loop
from .progress import EpochProgress
from .record import run_record, write_run_record
from .state import CHECKPOINT_DIR, LAST, TrainState, check_output_dir, prior_work, resume_path
from .tracking import Tracker

log = logging.getLogger("kdbench")
__all__ = ["CHECKPOINT_DIR", "LAST", "ConfigError", "TrainingFailed", "train"]


def train(cfg: DictConfig, run_dir: Path, teacher_provider=None, world: distributed.World | None = None) -> dict:
    """Run the configured training in ``run_dir``; returns the result record (also written as result.json).

    ``teacher_provider(cfg, data, device) -> (teacher, teacher_info)`` supplies the frozen teacher when the
    method uses one (see engine/teacher.py). ``world``: this process's place in a data-parallel job (the
    process group is already initialised); None trains in this process alone. Raises ConfigError for bad input
    before anything is trained, TrainingFailed (after writing a 'failed' result) when training breaks down, and
    preemption.Preempted (after a mid-interval checkpoint) when a stop signal arrives.
    """
    started_at, t_start = utc_now(), time.perf_counter()
    world = world or distributed.World()
    if world.main:
        check_output_dir(Path(run_dir))  # before any work (a teacher's training included)
    run = build(cfg, Path(run_dir), teacher_provider, world)
    state = start_or_resume(run)
    tracker = open_tracker(run, state)
    status, failure = "failed", None
    try:
        bar = EpochProgress(bool(cfg.trainer.progress) and run.world.main, run.schedule.intervals,
                            run.schedule.interval, int(cfg.trainer.batch_size))
        with bar:
            train_loop(run, state, tracker, bar)
        status = "completed"
    except preemption.Preempted as e:
        status, failure = "interrupted", str(e)
        raise
    except TrainingFailed as e:
        failure = str(e)
        raise
    except KeyboardInterrupt:
        failure = "interrupted (KeyboardInterrupt)"
        raise
    except Exception as e:
        failure = f"{type(e).__name__}: {e}".splitlines()[0]
        raise TrainingFailed(failure) from e
    finally:
        record = run_record(run, state, status=status, failure=failure, started_at=started_at,
                            wall_time_s=time.perf_counter() - t_start, wandb_dir=tracker.run_path)
        tracker.summary({k: v for k, v in record["metrics"].items() if v is not None} | {"status": status})
        tracker.finish(failed=status != "completed")
        write_run_record(run, record)
    return record


def start_or_resume(run: Run) -> TrainState:
    """A fresh state, or the one in ``resume``'s checkpoint (its weights and optimiser state restored; the previous
    checkpoint where the last is damaged). Never starts over silently where the run directory holds earlier work:
    ``resume=true`` without a checkpoint to continue from is refused there, a fresh start over it is warned of."""
    state = TrainState()
    resume = run.cfg.get("resume")
    path = resume_path(resume, run.run_dir)
    if path is None and run.world.main and (held := prior_work(run.run_dir)):
        if resume is True or str(resume).lower() == "true":
            raise ConfigError(f"resume: {run.run_dir} holds {held} but no checkpoint to continue from; pass "
                              "resume=false to start over there, or another hydra.run.dir")
        log.warning("%s already holds %s; starting over (its checkpoints and result.json get replaced; resume=true "
                    "continues it instead)", run.run_dir, held)
    if run.world.main:
        modules = (run.student, run.method)
        weights = sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())
        check_output_dir(run.run_dir, need_bytes=2 * weights)  # weights + optimiser state, at least
    if path is not None:
        state, path = TrainState.resume(path, run.resolved, run.checkpoint_modules(), run.device)
        if state.best is None:  # a checkpoint that did not record it: the best of its history, as the task ranks
            for entry in state.history:
                if run.task.is_better(entry[run.task.primary.name], state.best):
                    state.best = entry[run.task.primary.name]
        where = f"epoch {state.epoch + 1}" + (f", step {state.partial.step}" if state.partial else "")
        log.info("resuming from %s at %s", path, where)
    state.run_id = state.run_id or distributed.broadcast_object(f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    return state


def open_tracker(run: Run, state: TrainState) -> Tracker:
    cfg = run.cfg
    parts = [cfg.method.name, cfg.teacher.name if run.teacher is not None else None, cfg.student.name, f"s{run.seed}"]
    logger_cfg = cfg.logger if run.world.main else OmegaConf.create({"mode": "disabled"})
    tracker = Tracker(logger_cfg, run.run_dir, run.resolved, run_id=state.wandb_id,
                      default_name="-".join(str(p) for p in parts if p is not None), metrics=run.task.metrics)
    state.wandb_id = tracker.run_id
    if run.teacher_info:
        tracker.summary({f"teacher/{m.name}": run.teacher_info[m.name] for m in run.task.metrics
                         if m.name in run.teacher_info})
    return tracker
