"""Device, seeding, determinism and precision: the run-wide settings of the trainer."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from ..data.sampler import epoch_seed  # noqa: F401  (re-exported: the trainer's per-epoch reseed)
from ..errors import ConfigError

from ..precision import PRECISIONS, autocast  # noqa: F401  (the engine's precision policy)


def select_device(name: str) -> torch.device:
    """``auto`` picks cuda when available, else cpu; ``cuda`` without a GPU is a ConfigError."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device: unknown device '{name}'; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: '{name}' asked for, but no CUDA GPU is visible; use trainer.device=cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"trainer.device: unsupported device '{name}'; valid: auto, cpu, cuda, cuda:N")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True


def check_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision: unknown '{precision}'; valid: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.precision: fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("trainer.precision: this GPU has no bf16 support; use fp16 or fp32")
    return precision


# Where ``trainer.channels_last=auto`` turns channels_last on: the devices on which it was measured faster with
# the same arithmetic (README, Speed: kdbench-bench on the 2-core CPU, resnet32x4 -> resnet8x4 KD).
CHANNELS_LAST_AUTO = {"cpu": True, "cuda": False}


def resolve_channels_last(value, device: torch.device) -> bool:
    """``trainer.channels_last``: true, false, or auto (per device, from measurements)."""
    if str(value) == "auto":
        return CHANNELS_LAST_AUTO.get(device.type, False)
    return bool(value)
