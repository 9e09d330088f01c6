"""Logging a leaderboard to Weights & Biases (offline by default: no login, ``wandb sync`` uploads later)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .layout import Grid


def upload_wandb(grid: Grid, out: Path, images: Sequence[Path], project: str, mode: str, name: str) -> str:
    """Log the table (and plot) as a W&B run; offline mode needs no login. Returns the run's local directory."""
    import wandb

    run = wandb.init(project=project, mode=mode, dir=str(out), job_type="leaderboard", name=name,
                     config={"headers": grid.headers})
    try:
        payload = {"leaderboard": wandb.Table(columns=grid.headers, data=grid.body)}
        payload.update({f"plot/{p.stem}": wandb.Image(str(p)) for p in images})
        run.log(payload)
        where = run.dir
    finally:
        run.finish()
    return where
