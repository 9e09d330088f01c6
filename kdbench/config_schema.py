"""Typed schemas for the plain config groups: OmegaConf checks each value's type and names the bad key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError, ConfigKeyError

from .data.base import AUGMENTATIONS
from .engine.optim import OPTIMIZERS, SCHEDULES, strategy_of
from .engine.runtime import PRECISIONS
from .engine.tracking import MODES
from .errors import ConfigError


@dataclass
class TrainerSchema:
    epochs: int = 240
    batch_size: int = 64
    eval_batch_size: int = 256
    device: str = "auto"
    precision: str = "fp32"
    deterministic: bool = False
    channels_last: Any = "auto"  # true | false | auto (checked in CHOICES)
    compile: bool = False
    loader: str = "auto"
    teacher_cache: str = "auto"
    max_steps_per_epoch: Optional[int] = None
    iterations: Optional[int] = None  # iteration-based schedule instead of epochs
    eval_every: Optional[int] = None  # evaluate every N iterations (iteration-based runs)
    log_every_n_steps: int = 50
    progress: bool = True
    num_threads: Optional[int] = None


@dataclass
class OptimSchema:
    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "multistep"
    milestones: List[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: int = 0
    warmup_iters: int = 0  # iteration-based runs: linear warm-up over this many iterations
    warmup_factor: float = 0.001  # ... from this fraction of lr (Detectron2's default)
    betas: Optional[List[float]] = None
    delta: float = 0.075  # DOT: task momentum = momentum - delta, distillation momentum = momentum + delta


@dataclass
class LoggerSchema:
    mode: str = "offline"
    project: str = "kdbench"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    name: Optional[str] = None


@dataclass
class TeacherSchema:
    name: str = "resnet32x4"
    checkpoint: Optional[str] = None
    pretrained: bool = False
    train_if_missing: bool = True
    train_epochs: int = 240
    seed: int = 0
    recipe: Dict[str, Any] = field(default_factory=dict)  # the store-trained teacher's own trainer/optim keys


@dataclass
class StudentSchema:
    name: str = "resnet8x4"
    checkpoint: Optional[str] = None
    pretrained: bool = False
    base_lr: Optional[float] = None  # read by optim=cifar (lr 0.01 for MobileNetV2 / ShuffleNet students)


@dataclass
class DatasetSchema:
    name: str = "cifar100"
    root: Optional[str] = None
    download: bool = False
    num_classes: int = 100
    image_size: int = 32
    mean: List[float] = field(default_factory=list)
    std: List[float] = field(default_factory=list)
    augment: str = "cifar"
    num_workers: int = 0
    # dataset-specific extras are allowed (test_fraction, train_size, ...)


SCHEMAS = {"trainer": TrainerSchema, "optim": OptimSchema, "logger": LoggerSchema, "teacher": TeacherSchema,
           "student": StudentSchema, "dataset": DatasetSchema}
OPEN = {"dataset"}  # groups whose files may add keys of their own

# Each value list lives beside the code that acts on it; the preflight checks against the same lists.
CHOICES = {
    "trainer.precision": PRECISIONS,
    "optim.name": tuple(OPTIMIZERS),
    "trainer.loader": ("auto", "device", "jpeg", "torch"),
    "trainer.channels_last": (True, False, "auto"),
    "trainer.teacher_cache": ("auto", "on", "off"),
    "optim.schedule": SCHEDULES,
    "logger.mode": MODES,
    "dataset.augment": AUGMENTATIONS,
}


def check_schemas(cfg: DictConfig) -> None:
    for group, schema in SCHEMAS.items():
        section = cfg.get(group)
        if section is None:
            raise ConfigError(f"{group}: missing config group")
        base = OmegaConf.structured(schema)
        if group in OPEN:
            OmegaConf.set_struct(base, False)
        try:
            OmegaConf.merge(base, OmegaConf.to_container(section, resolve=True))
        except (ValidationError, ConfigKeyError) as e:
            key = getattr(e, "full_key", None) or getattr(e, "key", "?")
            first = str(e).splitlines()[0]
            raise ConfigError(f"{group}.{key}: {first}") from None
    for key, valid in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in valid:
            raise ConfigError(f"{key}: unknown value '{value}'; valid: {', '.join(valid)}")
    if int(cfg.trainer.epochs) < 1:
        raise ConfigError(f"trainer.epochs: must be >= 1, got {cfg.trainer.epochs}")
    if int(cfg.trainer.batch_size) < 1:
        raise ConfigError(f"trainer.batch_size: must be >= 1, got {cfg.trainer.batch_size}")
    if float(cfg.optim.lr) <= 0:
        raise ConfigError(f"optim.lr: must be > 0, got {cfg.optim.lr}")
    if reason := strategy_of(cfg.optim).refusal(str(cfg.optim.name), str(cfg.trainer.precision)):
        raise ConfigError(reason)
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        raise ConfigError(f"seed: expected an integer, got {cfg.get('seed')!r}")
