"""The checkpoint: one typed object (:class:`TrainState`) with one save / load / resume path.

``<run dir>/checkpoints/last.pt`` holds everything a resume needs (written atomically after every evaluation,
and mid-interval when a stop signal arrives; read back and checked before it replaces the previous one, which is
kept as ``last.prev.pt``); ``best.pt`` holds the student with the best primary metric. A resume from a missing,
truncated or corrupted ``last.pt`` falls back to ``last.prev.pt`` (one warning line); with neither readable it is
a one-line error. A checkpoint records the resolved config, and a resume from another configuration is refused
(keys that may differ: ``RESUME_FREE_KEYS``). The file is a plain dict (``model`` = the student's state_dict, as
the community teacher checkpoints), so the teacher store and other tools read it without kdbench classes.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..io import check_torch_file, check_writable, save_torch

log = logging.getLogger("kdbench")
CHECKPOINT_DIR = "checkpoints"
LAST, BEST, PREVIOUS = "last.pt", "best.pt", "last.prev.pt"
FORMAT = 2
# Keys that may differ between a run and the run it resumes.
RESUME_FREE_KEYS = ("resume", "trainer.progress", "trainer.log_every_n_steps", "trainer.num_threads", "logger")


@dataclass
class Partial:
    """An evaluation interval cut short by a stop signal: the running sums to continue it exactly."""

    step: int  # optimiser steps done in the interval
    names: list[str]
    sums: torch.Tensor
    seen: int
    finite: bool
    elapsed: float
    rng: list[dict]  # every rank's RNG state
    lr: float | None = None  # the learning rate when the interval began (recorded in its history entry)


@dataclass
class TrainState:
    """Where a run stands: completed evaluation intervals (epochs, in epoch-based runs), optimiser steps, the
    history so far and the counters that feed result.json; with the weights of everything trained when saved."""

    run_id: str | None = None
    wandb_id: str | None = None
    epoch: int = 0  # evaluation intervals completed (epochs, in epoch-based runs)
    step: int = 0  # optimiser steps completed at the end of ``epoch``
    history: list[dict] = field(default_factory=list)
    train_time_s: float = 0.0
    train_images: int = 0
    best: float | None = None  # the best primary metric so far
    partial: Partial | None = None

    def save(self, path: Path, config: dict, modules: dict[str, Any]) -> None:
        """``modules``: name -> object with ``state_dict()`` (model, method, optimizer, scheduler, scaler)."""
        body = asdict(self)
        body["partial"] = None if self.partial is None else asdict(self.partial)
        path = Path(path)
        previous = _previous_of(path)
        if previous is not None and path.is_file() and _problem(path) is not None:
            previous = None  # a damaged last.pt never displaces a sound last.prev.pt
        save_torch(path, {"kdbench": FORMAT, **{k: m.state_dict() for k, m in modules.items()}, **body,
                          "config": config}, verify=True, previous=previous)

    @classmethod
    def load(cls, path: Path, config: dict, modules: dict[str, Any], device) -> "TrainState":
        """Restore ``modules`` from a checkpoint written by this configuration and return the state."""
        return cls.resume(path, config, modules, device)[0]

    @classmethod
    def resume(cls, path: Path, config: dict, modules: dict[str, Any], device) -> tuple["TrainState", Path]:
        """:meth:`load`, falling back to the previous checkpoint (see :func:`read_checkpoint`); also returns the
        file it read."""
        path, saved = read_checkpoint(path, device)
        check_same_configuration(path, saved, config)
        if missing := [name for name in modules if name not in saved]:
            raise ConfigError(f"resume: {path} is not a training checkpoint (no {', '.join(missing)}); pass a "
                              f"{LAST} or a run directory")
        for name, module in modules.items():
            module.load_state_dict(saved[name])
        partial = saved.get("partial")
        if partial is not None:
            partial = Partial(**{k: partial[k] for k in Partial.__dataclass_fields__ if k in partial})
        state = cls(**{k: saved[k] for k in cls.__dataclass_fields__ if k in saved and k != "partial"}, partial=partial)
        return state, path


def _previous_of(path: Path) -> Path | None:
    return path.with_name(PREVIOUS) if path.name == LAST else None


def _problem(path: Path) -> str | None:
    try:
        check_torch_file(path)
    except ValueError as e:
        return str(e)
    return None


def read_checkpoint(path: Path, device="cpu", mmap: bool = False, warn: bool = True) -> tuple[Path, dict]:
    """(file read, contents): ``path``, or where it is missing or damaged the previous checkpoint kept beside it
    (``last.prev.pt``, one warning line). A one-line ConfigError naming the files when none can be read."""
    path = Path(path)
    problems = []
    for candidate in (path, _previous_of(path)):
        if candidate is None or (candidate != path and not candidate.is_file()):
            continue
        problem = "missing" if not candidate.is_file() else _problem(candidate)
        if problem is None:
            try:
                saved = torch.load(candidate, map_location=device, weights_only=False, mmap=mmap)
                if not isinstance(saved, dict):
                    problem = "not a kdbench checkpoint"
            except Exception as e:  # noqa: BLE001 - any unreadable file is reported, never raised as is
                problem = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        if problem is not None:
            problems.append(f"{candidate} is {problem}")
            continue
        if problems and warn:
            log.warning("resume: %s; falling back to the previous checkpoint %s (epoch %s)", problems[0], candidate,
                        saved.get("epoch"))
        return candidate, saved
    if len(problems) == 1:
        problems[0] += f" (no {PREVIOUS} to fall back to)" if _previous_of(path) is not None else ""
    raise ConfigError(f"resume: no readable checkpoint: {'; '.join(problems)}; pass resume=false to start over "
                      "(in another hydra.run.dir to keep this run)")


def prior_work(run_dir: Path) -> str | None:
    """What a run directory already holds of an earlier run (a checkpoint, or result.json with evaluated epochs),
    in words; None when nothing."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    held = [name for name in (LAST, PREVIOUS) if (ckpt_dir / name).is_file()]
    try:
        epochs = len(json.loads((Path(run_dir) / "result.json").read_text()).get("history") or [])
    except (OSError, ValueError, AttributeError):
        epochs = 0
    parts = ([f"checkpoints/{' and '.join(held)}"] if held else []) + ([f"result.json with {epochs} evaluated "
                                                                         f"epoch(s)"] if epochs else [])
    return " and ".join(parts) if parts else None


def check_output_dir(run_dir: Path, need_bytes: int = 0) -> None:
    """One-line ConfigError unless the run directory takes files (created if missing; a small probe is written,
    synced and removed) and, with ``need_bytes``, has that much free space."""
    run_dir = Path(run_dir)
    try:
        check_writable(run_dir)
        free = shutil.disk_usage(run_dir).free
    except OSError as e:
        raise ConfigError(f"output directory {run_dir} cannot be written ({e.strerror or e}); free space there or "
                          "choose another with hydra.run.dir=<dir> (hydra.sweep.dir for -m)") from None
    if free < need_bytes:
        raise ConfigError(f"output directory {run_dir} has {free / 2**20:.0f} MiB free; this run's checkpoints need "
                          f"about {need_bytes / 2**20:.0f} MiB; free space there or choose another with "
                          "hydra.run.dir=<dir>")


def save_best(path: Path, model: torch.nn.Module, epoch: int, metric: str, value: float) -> None:
    save_torch(path, {"model": model.state_dict(), "epoch": epoch, f"best_{metric}": value})


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def resume_path(resume, run_dir: Path) -> Path | None:
    """``resume=true``: this run directory's last checkpoint (if it or the previous one exists); a path: that file
    or run directory's."""
    if resume in (None, False, "", "false", "False"):
        return None
    if resume is True or str(resume).lower() == "true":
        path = run_dir / CHECKPOINT_DIR / LAST
        return path if path.is_file() or (path.parent / PREVIOUS).is_file() else None
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_DIR / LAST
    if not path.is_file() and not (path.name == LAST and (path.parent / PREVIOUS).is_file()):
        raise ConfigError(f"resume: no checkpoint at {path}; pass resume=true, a checkpoint file or a run directory")
    return path


def check_resume_source(cfg: DictConfig) -> None:
    """Before a run starts: ``resume=<checkpoint or run directory>`` must exist and have been written by this
    configuration (the tensors are memory-mapped, not read). ``resume=true`` is checked by the run itself."""
    resume = cfg.get("resume")
    if resume is None or resume is True or str(resume).lower() in ("", "false", "true"):
        return
    path, checkpoint = read_checkpoint(resume_path(resume, Path(".")), mmap=True, warn=False)
    check_same_configuration(path, checkpoint, OmegaConf.to_container(cfg, resolve=True))


def check_same_configuration(path: Path, checkpoint: dict, resolved: dict) -> None:
    if diff := _config_difference(checkpoint.get("config", {}), resolved):
        raise ConfigError(f"resume: {path} was written by another configuration (differs in {', '.join(diff[:5])})")


def _flat(cfg: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _config_difference(saved: dict, current: dict) -> list[str]:
    a, b = _flat(saved), _flat(current)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(RESUME_FREE_KEYS))
