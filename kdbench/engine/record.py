"""The record phase: result.json from a run and where it stands (completed, failed or interrupted)."""

from __future__ import annotations

from ..results.record import build_record, write_record
from .build import Run
from .state import TrainState


def run_record(run: Run, state: TrainState, *, status: str, failure: str | None, started_at: str,
               wall_time_s: float, wandb_dir: str | None) -> dict:
    config = run.resolved
    if run.world.distributed:
        config = {**config, "distributed": {"world_size": run.world.size, "batch_per_rank": run.batch_per_rank}}
    data = run.data
    return build_record(
        run_id=state.run_id, status=status, failure=failure, started_at=started_at, config=config,
        dataset={"name": data.name, "num_classes": data.num_classes, "image_size": data.image_size,
                 "train_size": len(data.train), "test_size": len(data.test), "loader": run.loader_kind},
        teacher=run.teacher_info, student=run.student_info,
        method={"name": str(run.cfg.method.name), "hparams": run.method.hparams()},
        seed=run.seed, epochs=run.schedule.epochs if run.schedule.unit == "epoch" else run.schedule.intervals,
        history=state.history, wall_time_s=wall_time_s,
        images_per_s=(state.train_images / state.train_time_s) if state.train_time_s > 0 else None,
        device=str(run.device), precision=run.precision, run_dir=run.run_dir, wandb_dir=wandb_dir,
        metrics=run.task.summarize(state.history))


def write_run_record(run: Run, record: dict) -> None:
    if run.world.main:
        write_record(run.run_dir, record)
