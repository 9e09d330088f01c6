"""Hydra callback: when a multirun ends, print the sweep's leaderboard and write it (and the runs' learning curves)
next to the runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("kdbench")


class LeaderboardCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rich.console import Console

        from ..io import write_text
        from .aggregate import aggregate, board_stem, by_task, failed_runs, find_results, with_published
        from .render import failed_markdown, print_table, render_rich, to_csv, to_markdown

        sweep_dir = Path(config.hydra.sweep.dir)
        records = find_results([sweep_dir])
        if not records:
            log.warning("no result.json under %s: no leaderboard", sweep_dir)
            return
        rows = with_published(aggregate(records))  # published numbers of the same setting, where there are any
        failed = failed_runs(records)
        console = Console()
        for task, part in by_task(rows).items():  # one table per task, as kdbench-table
            stem = board_stem(task)
            board_failed = failed_markdown([f for f in failed if f["task"] == task])
            print_table(render_rich(part), console)
            if board_failed:
                console.print(board_failed, highlight=False, markup=False, soft_wrap=True)
            write_text(sweep_dir / f"{stem}.md", to_markdown(part) + board_failed)
            to_csv(part, sweep_dir / f"{stem}.csv")
            log.info("leaderboard: %s", sweep_dir / f"{stem}.md")
            try:  # the learning curves; a plotting failure never fails the sweep
                from .plot import plot_curves

                curves = plot_curves(records, part, sweep_dir / f"{stem}-curves.png")
            except Exception as e:  # noqa: BLE001
                log.warning("no learning curves: %s: %s", type(e).__name__, e)
            else:
                if curves is not None:
                    log.info("learning curves: %s", curves)
