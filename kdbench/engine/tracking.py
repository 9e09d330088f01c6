"""Weights & Biases tracking: offline by default (nothing waits on a login), online or disabled by config.

One W&B run per kdbench run (each multirun job its own); its id is kept in the checkpoint so a resumed run
continues the same W&B run instead of starting a second one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import ConfigError

log = logging.getLogger("kdbench")
MODES = ("online", "offline", "disabled")


class Tracker:
    def __init__(self, cfg, run_dir: Path, config: dict, run_id: str | None = None, default_name: str | None = None,
                 metrics: tuple = ()):
        """``metrics``: the task's metrics (``name``, ``higher_is_better``), summarised as their best value."""
        self.run = None
        mode = str(cfg.mode)
        if mode not in MODES:
            raise ConfigError(f"logger.mode: unknown mode '{mode}'; valid: {', '.join(MODES)}")
        if mode == "disabled":
            return
        import wandb

        self.run = wandb.init(
            mode=mode, project=cfg.project, entity=cfg.entity, group=cfg.group, tags=list(cfg.tags or []),
            name=cfg.name or default_name, config=config, dir=str(run_dir), id=run_id, resume="allow" if run_id else None,
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True, save_code=False),
        )
        for metric in metrics:
            self.run.define_metric(f"val/{metric.name}", summary="max" if metric.higher_is_better else "min")

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def run_path(self) -> str | None:
        return str(Path(self.run.dir).parent) if self.run is not None else None

    def log(self, values: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
