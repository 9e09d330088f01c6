"""Rich progress for training: one bar over the whole run with the epoch, running loss terms, images/s and ETA.

Updating the bar's step count costs nothing; the loss values are read from the device only at the logging
cadence (``trainer.log_every_n_steps``), so the bar adds no per-step host synchronisation. Where the output is not a
terminal (a SLURM log, CI, a pipe) there is no bar: the same values become one log line at that cadence.
"""

from __future__ import annotations

import logging
import time

from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


log = logging.getLogger("kdbench")


class EpochProgress:
    def __init__(self, enabled: bool, total_epochs: int, steps_per_epoch: int, batch_size: int):
        self.console = get_console()  # the console the rich log handler writes to, so logs print above the bar
        self.enabled = enabled and self.console.is_terminal
        self.log_lines = enabled and not self.console.is_terminal
        self.total_epochs, self.steps, self.batch_size = total_epochs, steps_per_epoch, batch_size
        self._progress = None
        self._task = None
        self._epoch, self._t0 = 0, 0.0

    def __enter__(self):
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), console=self.console, transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False

    def start_epoch(self, epoch: int) -> None:
        self._epoch, self._t0 = epoch, time.perf_counter()
        if self._progress is None:
            return
        if self._task is None:
            self._task = self._progress.add_task("train", total=self.total_epochs * self.steps, epoch=epoch,
                                                 epochs=self.total_epochs, info="", speed="")
            self._progress.update(self._task, completed=(epoch - 1) * self.steps)
        self._progress.update(self._task, epoch=epoch)

    def update(self, step_in_epoch: int, losses: dict | None = None) -> None:
        if self.log_lines and losses:
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            log.info("epoch %d/%d  step %d/%d  %s  %.0f img/s", self._epoch, self.total_epochs, step_in_epoch,
                     self.steps, "  ".join(f"{k} {v:.4f}" for k, v in losses.items()),
                     step_in_epoch * self.batch_size / elapsed)
        if self._progress is None:
            return
        fields = {}
        if losses:
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            fields["speed"] = f"{step_in_epoch * self.batch_size / elapsed:,.0f} img/s"
            fields["info"] = "  ".join(f"{k} {v:.4f}" for k, v in losses.items())
        self._progress.update(self._task, completed=(self._epoch - 1) * self.steps + step_in_epoch, **fields)

    def end_epoch(self, entry: dict, headline: str) -> None:
        """``headline``: the evaluation's primary metric, as the bar shows it (``top1 71.20``)."""
        if self._progress is not None:
            self._progress.update(self._task, speed=f"{entry['images_per_s']:,.0f} img/s", info=headline)
