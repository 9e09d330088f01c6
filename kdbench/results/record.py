"""result.json, the one record per run: its schema, its writer and its reader (every reader goes through here)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable, Iterator

from .. import __version__
from ..io import write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
STATUSES = ("completed", "failed")


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
                 run_dir: Path, wandb_dir: str | None = None, metrics: dict | None = None) -> dict[str, Any]:
    """The record of one run; ``metrics`` are the task's own numbers (default: top-1/top-5 from ``history``)."""
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
        "metrics": summarize(history) if metrics is None else metrics,
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


class RecordError(ValueError):
    """A file that is not a readable kdbench result; the message names the file and what is wrong."""


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """The record in ``path``, checked against this schema version (raises :class:`RecordError`)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise RecordError(f"{path}: cannot read JSON ({exc})") from exc
    problem = _schema_problem(data)
    if problem:
        raise RecordError(f"{path}: not a kdbench result ({problem})")
    return data


def _schema_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "top level is not an object"
    if data.get("schema") != SCHEMA_VERSION:
        return f"schema is {data.get('schema')!r}, expected {SCHEMA_VERSION}"
    if not isinstance(data.get("run_id"), str):
        return "no run_id"
    if data.get("status") not in STATUSES:
        return f"unknown status {data.get('status')!r}"
    for part in ("dataset", "student", "method"):
        if not isinstance(data.get(part), dict) or not isinstance(data[part].get("name"), str):
            return f"no {part}.name"
    if data.get("teacher") is not None and not isinstance(data["teacher"].get("name"), str):
        return "teacher without a name"
    return None


def iter_records(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(file, record) for every kdbench result under ``paths`` (files, or directories searched recursively without
    following symlinked directories), each file once; unreadable and foreign files are skipped with a warning."""
    seen: set[Path] = set()
    for path in map(Path, paths):
        for file in _result_files(path):
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            try:
                yield file, read_record(file)
            except RecordError as exc:
                log.warning("skipping %s", exc)


def _result_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        log.warning("skipping %s: no such file or directory", path)
        return []
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        if RESULT_FILE in files:
            found.append(Path(root, RESULT_FILE))
    return found
