"""Checkpoint loading: kdbench checkpoints and the community CIFAR teacher format, unchanged.

RepDistiller / mdistiller save ``{"model": state_dict, "epoch": ..., "best_acc": ..., "optimizer": ...}``
(``ckpt_epoch_240.pth``, ``<arch>_best.pth``); kdbench checkpoints also keep the student under ``model``.
A bare state_dict and a ``state_dict`` entry load too; a DataParallel ``module.`` prefix is removed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError


def read_state_dict(path: str | os.PathLike, key: str = "teacher.checkpoint") -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: no file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to unpickle a user file is bad input, reported in one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{key}: cannot read checkpoint {path}: {reason}") from None
    if isinstance(obj, dict):
        for entry in ("model", "state_dict"):
            if isinstance(obj.get(entry), dict):
                obj = obj[entry]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{key}: {path} holds no state_dict (expected a dict of tensors or a dict with a 'model' entry)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_checkpoint(model: nn.Module, path: str | os.PathLike, key: str = "teacher.checkpoint") -> nn.Module:
    """Load the weights at ``path`` into ``model`` (strict); a mismatch is a ConfigError naming the keys."""
    state = read_state_dict(path, key)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or mismatched:
        name = getattr(model, "kdbench_name", type(model).__name__)
        parts = [f"{label} {len(keys)} keys (e.g. {', '.join(keys[:3])})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)) if keys]
        raise ConfigError(f"{key}: {path} does not fit model {name}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)
    return model


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over a model's state_dict (names, shapes, bytes): identifies teacher weights for caches."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
