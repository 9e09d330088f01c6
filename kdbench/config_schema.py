"""Typed schemas for the plain config groups: OmegaConf checks each value's type and names the bad key;
``RANGES`` gives each numeric key its valid range, in the small grammar of :func:`parse_range`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError, ConfigKeyError

from .data.base import AUGMENTATIONS
from .engine.optim import OPTIMIZERS, SCHEDULES, strategy_of
from .engine.runtime import PRECISIONS
from .engine.tracking import MODES
from .models.ensemble import COMBINES
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
    random_init: bool = False  # the architecture at random initialisation (seeded by seed), frozen
    members: List[Any] = field(default_factory=list)  # teacher=ensemble: names or mappings of teacher keys
    combine: str = "logits"  # teacher=ensemble: logits | probs (kdbench/models/ensemble.py)
    features_from: int = 0  # teacher=ensemble: the member whose features methods see


@dataclass
class StudentSchema:
    name: str = "resnet8x4"
    checkpoint: Optional[str] = None
    pretrained: bool = False
    base_lr: Optional[float] = None  # read by optim=cifar (lr 0.01 for MobileNetV2 / ShuffleNet students)
    init_from_teacher: Optional[str] = None  # start from the teacher's weights (engine/student.py: FROM_TEACHER)
    init_scale: float = 0.0  # eps (neighborhood) or alpha (interpolated) of init_from_teacher


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
    "teacher.combine": COMBINES,
}


# Valid ranges of the numeric keys (a key that is null is not checked: null means "unset").
RANGES = {
    "seed": ">= 0",
    "trainer.epochs": ">= 1",
    "trainer.batch_size": ">= 1",
    "trainer.eval_batch_size": ">= 1",
    "trainer.max_steps_per_epoch": ">= 1",
    "trainer.iterations": ">= 1",
    "trainer.eval_every": ">= 1",
    "trainer.log_every_n_steps": ">= 1",
    "trainer.num_threads": ">= 1",
    "optim.lr": "> 0",
    "optim.momentum": "[0, 1)",
    "optim.weight_decay": ">= 0",
    "optim.gamma": "(0, 1]",
    "optim.warmup_epochs": ">= 0",
    "optim.warmup_iters": ">= 0",
    "optim.warmup_factor": "(0, 1]",
    "optim.delta": "[0, 1)",
    "teacher.train_epochs": ">= 1",
    "teacher.seed": ">= 0",
    "teacher.features_from": ">= 0",
    "student.base_lr": "> 0",
    "dataset.num_classes": ">= 1",
    "dataset.image_size": ">= 1",
    "dataset.num_workers": ">= 0",
    "dataset.max_size": ">= 1",
    "dataset.test_fraction": "(0, 1)",
    "dataset.train_size": ">= 1",
    "dataset.test_size": ">= 1",
    "dataset.noise": ">= 0",
}
# Keys holding lists whose every element has a range (and, for milestones, must increase).
ITEM_RANGES = {"optim.milestones": ">= 1", "optim.betas": "[0, 1)", "dataset.train_sizes": ">= 1",
               "dataset.std": "> 0"}

_BOUND = re.compile(r"^\s*(>=|<=|>|<)\s*(\S+)\s*$")
_INTERVAL = re.compile(r"^\s*([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])\s*$")


def parse_range(spec: str) -> tuple[float, bool, float, bool]:
    """``"> 0"``, ``">= 1"``, ``"< 1"``, ``"<= 1"``, ``"[0, 1]"``, ``"[0, 1)"``, ``"(0, 1]"``, ``"(0, 1)"`` or
    ``"any"`` -> (low, low inclusive, high, high inclusive)."""
    if spec.strip() == "any":
        return -math.inf, True, math.inf, True
    if m := _BOUND.match(spec):
        op, bound = m.group(1), float(m.group(2))
        if op.startswith(">"):
            return bound, op == ">=", math.inf, True
        return -math.inf, True, bound, op == "<="
    if m := _INTERVAL.match(spec):
        return float(m.group(2)), m.group(1) == "[", float(m.group(3)), m.group(4) == "]"
    raise ValueError(f"not a range: {spec!r} (e.g. '> 0', '>= 1', '[0, 1)', 'any')")


def in_range(value: float, spec: str) -> bool:
    """Whether ``value`` (a finite number, except under ``"any"``) lies in the range ``spec``."""
    low, low_in, high, high_in = parse_range(spec)
    if spec.strip() != "any" and not math.isfinite(value):
        return False
    return (value >= low if low_in else value > low) and (value <= high if high_in else value < high)


def range_error(key: str, value: Any, spec: str) -> str | None:
    """The one-line complaint about ``key = value`` against ``spec`` (None: in range, or not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if in_range(value, spec):
        return None
    shown = spec if spec.lstrip()[0] in "<>" else f"in {spec}"
    finite = "" if math.isfinite(value) else "a finite number "
    return f"{key}: must be {finite}{shown}, got {value!r}"


def check_ranges(cfg: DictConfig) -> None:
    """Every key of ``RANGES`` / ``ITEM_RANGES`` present in ``cfg`` lies in its range."""
    for key, spec in RANGES.items():
        if message := range_error(key, OmegaConf.select(cfg, key, default=None), spec):
            raise ConfigError(message)
    for key, spec in ITEM_RANGES.items():
        values = OmegaConf.select(cfg, key, default=None)
        for i, value in enumerate(values or []):
            if message := range_error(f"{key}[{i}]", value, spec):
                raise ConfigError(message)
    milestones = list(OmegaConf.select(cfg, "optim.milestones", default=None) or [])
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ConfigError(f"optim.milestones: must increase, got {milestones}")
    if str(OmegaConf.select(cfg, "optim.name", default="")) == "dot":  # task / distillation momentum 0.9 -/+ delta
        momentum, delta = float(cfg.optim.momentum), float(cfg.optim.delta)
        if not (0 <= momentum - delta and momentum + delta < 1):
            raise ConfigError(f"optim.delta: momentum - delta and momentum + delta must lie in [0, 1), "
                              f"got momentum {momentum} and delta {delta}")


_ABSENT = object()


def check_schemas(cfg: DictConfig) -> None:
    typed = {"seed": cfg.get("seed")}  # each group merged into its schema: a float key reads as a float
    for group, schema in SCHEMAS.items():
        section = cfg.get(group)
        if section is None:
            raise ConfigError(f"{group}: missing config group")
        base = OmegaConf.structured(schema)
        if group in OPEN:
            OmegaConf.set_struct(base, False)
        try:
            typed[group] = OmegaConf.merge(base, OmegaConf.to_container(section, resolve=True))
        except (ValidationError, ConfigKeyError) as e:
            key = getattr(e, "full_key", None) or getattr(e, "key", "?")
            first = str(e).splitlines()[0]
            raise ConfigError(f"{group}.{key}: {first}") from None
    for key, valid in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:  # a key only some group entries have (teacher.combine: teacher=ensemble)
            continue
        if value not in valid:
            shown = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in valid)
            raise ConfigError(f"{key}: unknown value '{value}'; valid: {shown}")
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        raise ConfigError(f"seed: expected an integer, got {cfg.get('seed')!r}")
    check_ranges(OmegaConf.create(typed))
    if reason := strategy_of(cfg.optim).refusal(str(cfg.optim.name), str(cfg.trainer.precision)):
        raise ConfigError(reason)
