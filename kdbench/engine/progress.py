"""Rich progress for training: one bar per epoch with the running loss terms, images/s and ETA."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn


class EpochProgress:
    def __init__(self, enabled: bool, total_epochs: int, steps_per_epoch: int):
        self.enabled = enabled and sys.stderr.isatty()
        self.total_epochs, self.steps = total_epochs, steps_per_epoch
        self._progress = None
        self._task = None
        self._epoch = 0

    def __enter__(self):
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
                TaskProgressColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=Console(stderr=True), transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False

    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task("train", total=self.steps, epoch=epoch, epochs=self.total_epochs, info="")

    def update(self, completed: int, losses: dict | None = None) -> None:
        if self._progress is None:
            return
        fields = {}
        if losses:
            fields["info"] = "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
        self._progress.update(self._task, completed=completed, **fields)

    def end_epoch(self, entry: dict) -> None:
        if self._progress is not None:
            self._progress.update(self._task, info=f"top1 {entry['top1']:.2f}  {entry['images_per_s']:.0f} img/s")
