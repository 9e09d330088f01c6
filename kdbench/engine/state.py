"""The checkpoint: one typed object (:class:`TrainState`) with one save / load / resume path.

``<run dir>/checkpoints/last.pt`` holds everything a resume needs (written atomically after every evaluation,
and mid-interval when a stop signal arrives); ``best.pt`` holds the student with the best primary metric. A
checkpoint records the resolved config, and a resume from another configuration is refused (keys that may differ:
``RESUME_FREE_KEYS``). The file is a plain dict (``model`` = the student's state_dict, as the community teacher
checkpoints), so the teacher store and other tools read it without kdbench classes.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..io import save_torch

CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
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
        save_torch(path, {"kdbench": FORMAT, **{k: m.state_dict() for k, m in modules.items()}, **body,
                          "config": config})

    @classmethod
    def load(cls, path: Path, config: dict, modules: dict[str, Any], device) -> "TrainState":
        """Restore ``modules`` from a checkpoint written by this configuration and return the state."""
        saved = torch.load(path, map_location=device, weights_only=False)
        check_same_configuration(path, saved, config)
        for name, module in modules.items():
            module.load_state_dict(saved[name])
        partial = saved.get("partial")
        if partial is not None:
            partial = Partial(**{k: partial[k] for k in Partial.__dataclass_fields__ if k in partial})
        return cls(**{k: saved[k] for k in cls.__dataclass_fields__ if k in saved and k != "partial"}, partial=partial)


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
    """``resume=true``: this run directory's last checkpoint (if any); a path: that file or run directory's."""
    if resume in (None, False, "", "false", "False"):
        return None
    if resume is True or str(resume).lower() == "true":
        path = run_dir / CHECKPOINT_DIR / LAST
        return path if path.is_file() else None
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_DIR / LAST
    if not path.is_file():
        raise ConfigError(f"resume: no checkpoint at {path}; pass resume=true, a checkpoint file or a run directory")
    return path


def check_resume_source(cfg: DictConfig) -> None:
    """Before a run starts: ``resume=<checkpoint or run directory>`` must exist and have been written by this
    configuration (the tensors are memory-mapped, not read). ``resume=true`` is checked by the run itself."""
    resume = cfg.get("resume")
    if resume is None or resume is True or str(resume).lower() in ("", "false", "true"):
        return
    path = resume_path(resume, Path("."))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise ConfigError(f"resume: cannot read checkpoint {path} ({type(e).__name__})") from None
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
