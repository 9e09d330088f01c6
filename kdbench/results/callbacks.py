"""Hydra callback: when a multirun ends, print the sweep's leaderboard and write it next to the runs."""

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
        from .aggregate import aggregate, failed_runs, find_results, with_published
        from .render import failed_markdown, render_rich, to_csv, to_markdown

        sweep_dir = Path(config.hydra.sweep.dir)
        records = find_results([sweep_dir])
        if not records:
            log.warning("no result.json under %s: no leaderboard", sweep_dir)
            return
        rows = with_published(aggregate(records))  # published numbers of the same setting, where there are any
        failed = failed_markdown(failed_runs(records))
        Console().print(render_rich(rows))
        if failed:
            Console().print(failed, highlight=False, markup=False)
        markdown = to_markdown(rows) + failed
        write_text(sweep_dir / "leaderboard.md", markdown)
        to_csv(rows, sweep_dir / "leaderboard.csv")
        log.info("leaderboard: %s", sweep_dir / "leaderboard.md")
