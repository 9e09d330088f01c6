"""Weights & Biases tracking: offline by default (nothing waits on a login), online or disabled by config.

One W&B run per kdbench run (each multirun job its own); its id is kept in the checkpoint so a resumed run
continues the same W&B run instead of starting a second one. ``online`` without a network or a login falls back
to offline with one warning line: W&B gets ``WANDB_INIT_TIMEOUT`` seconds (default 30) to start.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError

log = logging.getLogger("kdbench")
MODES = ("online", "offline", "disabled")
INIT_TIMEOUT_S = 30.0


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

        def init(mode: str):
            return wandb.init(
                mode=mode, project=cfg.project, entity=cfg.entity, group=cfg.group, tags=list(cfg.tags or []),
                name=cfg.name or default_name, config=config, dir=str(run_dir), id=run_id,
                resume="allow" if run_id else None,
                settings=wandb.Settings(console="off", silent=True, x_disable_stats=True, save_code=False,
                                        init_timeout=init_timeout(), login_timeout=init_timeout()),
            )

        try:
            self.run = init(mode)
        except Exception as e:  # noqa: BLE001 - no network, no login, a server error: never stop the run for it
            if mode != "online":
                raise
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            log.warning("logger.mode=online: W&B cannot be reached (%s: %s); logging offline instead (upload later "
                        "with `wandb sync %s/wandb/offline-run-*`)", type(e).__name__, reason, run_dir)
            _teardown(wandb)
            self.run = init("offline")
        for metric in metrics:
            self.run.define_metric(f"val/{metric.name}", summary="max" if metric.higher_is_better else "min")

    @property
    def mode(self) -> str:
        return "disabled" if self.run is None else str(self.run.settings.mode)

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


def init_timeout() -> float:
    """Seconds W&B may take to start a run: ``WANDB_INIT_TIMEOUT`` or :data:`INIT_TIMEOUT_S`."""
    try:
        return float(os.environ.get("WANDB_INIT_TIMEOUT", INIT_TIMEOUT_S))
    except ValueError:
        return INIT_TIMEOUT_S


def _teardown(wandb) -> None:
    """Forget a failed start (W&B's service would hold its run id), so the offline run can take the same id."""
    try:
        wandb.teardown()
    except Exception:  # noqa: BLE001 - nothing to forget
        pass
