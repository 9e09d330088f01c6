"""kdbench/engine/progress.py: a bar in a terminal; where the output is not a terminal, log lines at the logging
cadence instead (readable in SLURM logs and CI)."""

from __future__ import annotations

import logging

from kdbench.engine import progress as progress_module


class _Console:
    def __init__(self, terminal: bool):
        self.is_terminal = terminal


def test_no_terminal_gives_log_lines_at_the_logging_cadence(monkeypatch, caplog):
    monkeypatch.setattr(progress_module, "get_console", lambda: _Console(False))
    with caplog.at_level(logging.INFO, logger="kdbench"):
        with progress_module.EpochProgress(True, total_epochs=3, steps_per_epoch=40, batch_size=64) as bar:
            bar.start_epoch(2)
            bar.update(10)  # between logging steps: nothing read, nothing printed
            bar.update(20, {"loss": 1.25, "ce": 0.5})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("epoch 2/3  step 20/40  loss 1.2500  ce 0.5000")
    assert lines[0].endswith("img/s")


def test_disabled_progress_prints_nothing(monkeypatch, caplog):
    monkeypatch.setattr(progress_module, "get_console", lambda: _Console(False))
    with caplog.at_level(logging.INFO, logger="kdbench"):
        with progress_module.EpochProgress(False, 3, 40, 64) as bar:
            bar.start_epoch(1)
            bar.update(20, {"loss": 1.0})
    assert not caplog.records
