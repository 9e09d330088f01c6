"""Where log lines go on the console: rich's handler in a terminal; where the output is not a terminal (a SLURM
log, CI, a pipe) plain lines with their time and level, never wrapped at a guessed width."""

from __future__ import annotations

import logging
import sys


def console_handler() -> logging.Handler:
    """The console handler of the ``kdbench`` job logging config (conf/hydra/job_logging/kdbench.yaml)."""
    from rich import get_console

    if get_console().is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        return handler
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    return handler
