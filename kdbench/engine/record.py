"""The record phase: result.json from a run and where it stands (completed, failed or interrupted)."""

from __future__ import annotations

import logging

from ..errors import TrainingFailed
from ..results.record import build_record, write_record
from .build import Run
from .state import TrainState

log = logging.getLogger("kdbench")


def run_record(run: Run, state: TrainState, *, status: str, failure: str | None, started_at: str,
               wall_time_s: float, wandb_dir: str | None) -> dict:
    config = run.resolved
    if run.world.distributed:
        config = {**config, "distributed": {"world_size": run.world.size, "batch_per_rank": run.batch_per_rank}}
    data = run.data
    return build_record(
        run_id=state.run_id, status=status, failure=failure, started_at=started_at, config=config,
        dataset={"name": data.name, "num_classes": data.num_classes, "image_size": data.image_size,
                 "train_size": len(data.train), "test_size": len(data.test), "loader": run.loader_kind,
                 **({"split": data.split} if data.split else {})},
        teacher=run.teacher_info, student=run.student_info,
        method={"name": str(run.cfg.method.name), "hparams": run.method.hparams(),
                **({"selected": state.history[-1]["selected"]} if state.history and "selected" in state.history[-1]
                   else {})},
        seed=run.seed, epochs=run.schedule.epochs if run.schedule.unit == "epoch" else run.schedule.intervals,
        history=state.history, wall_time_s=wall_time_s,
        images_per_s=(state.train_images / state.train_time_s) if state.train_time_s > 0 else None,
        device=str(run.device), precision=run.precision, run_dir=run.run_dir, wandb_dir=wandb_dir,
        metrics=run.task.summarize(state.history))


def write_run_record(run: Run, record: dict) -> None:
    """result.json (rank 0). A record that cannot be written (a full disk) fails a completed run (TrainingFailed);
    for a run that failed or stopped it is logged in one line and never replaces the failure being reported."""
    if not run.world.main:
        return
    try:
        write_record(run.run_dir, record)
    except OSError as e:
        where = run.run_dir / "result.json"
        if record["status"] == "completed":
            raise TrainingFailed(f"cannot write {where} ({e.strerror or e})") from None
        log.error("cannot write %s (%s); the run's status was %s%s", where, e.strerror or e, record["status"],
                  f": {record['failure']}" if record.get("failure") else "")
