"""result.json: one record per run, written atomically in the run directory (schema version 1)."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path
from typing import Any

from .. import __version__
from ..io import write_json

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_revision() -> dict | None:
    """The git revision of the kdbench code that ran, if it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return {"revision": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def summarize(history: list[dict]) -> dict[str, Any]:
    """Best and last top-1/top-5 from the per-epoch history (best = highest top-1, earliest epoch on ties)."""
    if not history:
        return {"best_top1": None, "best_top5": None, "best_epoch": None, "last_top1": None, "last_top5": None}
    best = max(history, key=lambda h: (h["top1"], -h["epoch"]))
    last = history[-1]
    return {"best_top1": best["top1"], "best_top5": best["top5"], "best_epoch": best["epoch"],
            "last_top1": last["top1"], "last_top5": last["top5"]}


def build_record(*, run_id: str, status: str, failure: str | None, started_at: str, config: dict, dataset: dict,
                 teacher: dict | None, student: dict, method: dict, seed: int, epochs: int, history: list[dict],
                 wall_time_s: float, images_per_s: float | None, device: str, precision: str,
                 run_dir: Path, wandb_dir: str | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "run_id": run_id,
        "status": status,
        "failure": failure,
        "started_at": started_at,
        "finished_at": utc_now(),
        "kdbench_version": __version__,
        "git": git_revision(),
        "host": platform.node(),
        "config": config,
        "dataset": dataset,
        "teacher": teacher,
        "student": student,
        "method": method,
        "seed": seed,
        "epochs": epochs,
        "epochs_run": len(history),
        "metrics": summarize(history),
        "history": history,
        "wall_time_s": round(wall_time_s, 3),
        "images_per_s": None if images_per_s is None else round(images_per_s, 1),
        "device": device,
        "precision": precision,
        "run_dir": str(run_dir),
        "wandb_dir": wandb_dir,
    }


def write_record(run_dir: Path, record: dict) -> Path:
    return write_json(Path(run_dir) / RESULT_FILE, record)
