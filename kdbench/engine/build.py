"""The build phase: from a composed config to everything a run trains with (:class:`Run`).

Order matters for reproducibility and is fixed: seed -> data -> method -> student -> teacher (reseeded after, so
the draws below are the same whether the teacher was loaded or trained just now) -> loaders -> teacher-logit
cache -> the method's trainable parts, sized from a forward of the actual pair (never from channel tables) ->
optimiser, schedule and the training step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .. import distributed
from ..data import build_data
from ..data.base import IndexedDataset, build_transforms
from ..data.batch import Batch
from ..errors import ConfigError
from ..methods import BuildContext, Method, build_method
from ..tasks import Task, task_of
from .logit_cache import CachePlan
from .loop import Schedule, schedule_of
from .optim import build_optimizer, build_scheduler, strategy_of
from .runtime import check_precision, resolve_channels_last, seed_everything, select_device, set_deterministic
from .state import CHECKPOINT_DIR
from .step import TrainStep
from ..models.checkpoint import weights_fingerprint  # noqa: F401  (the teacher's cache key; re-exported)
from .student import build_student, initialise_from_teacher


@dataclass
class Run:
    """Everything one run trains with, built once."""

    cfg: DictConfig
    run_dir: Path
    resolved: dict  # the config, resolved: recorded in checkpoints and result.json
    world: distributed.World
    device: torch.device
    precision: str
    seed: int
    batch_per_rank: int
    task: Task
    data: Any
    student: torch.nn.Module
    student_info: dict
    teacher: torch.nn.Module | None
    teacher_info: dict | None
    method: Method
    train_loader: Any
    sampler: Any
    test_loader: Any
    validation_loader: Any  # the validation split's batches (methods that need one), else None
    loader_kind: str
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: TrainStep
    schedule: Schedule

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    def checkpoint_modules(self) -> dict[str, Any]:
        """What a checkpoint saves and a resume restores, by checkpoint key."""
        return {"model": self.student, "method": self.method, "optimizer": self.optimizer,
                "scheduler": self.scheduler, "scaler": self.step.scaler}


def build_context(cfg, data, device, teacher, fingerprint: str | None, task: Task, student=None,
                  validation_loader=None) -> BuildContext:
    """What ``Method.build`` may use besides sample outputs (the training labels, the frozen teacher, a cache
    folder, an un-augmented pass over the training set, the student, the validation split's batches)."""
    dcfg = cfg.dataset

    def plain_train_batches():
        plain = IndexedDataset(data.train, build_transforms(dcfg.augment, data.image_size, dcfg.mean, dcfg.std,
                                                            train=False))
        loader = torch.utils.data.DataLoader(plain, batch_size=int(cfg.trainer.eval_batch_size), shuffle=False)
        for images, targets, index in loader:
            yield images.to(device), targets.to(device), index.to(device)

    def validation_batches():
        for batch in validation_loader:
            yield batch.images, batch.targets, batch.index

    return BuildContext(num_classes=data.num_classes, train_targets=task.training_labels(data), device=device,
                        teacher=teacher, teacher_fingerprint=fingerprint,
                        cache_dir=Path(str(cfg.store)).expanduser() / "cache", plain_train_batches=plain_train_batches,
                        student=student, validation_batches=validation_batches if validation_loader is not None else None)


def size_method(method: Method, student, teacher, samples, context: BuildContext, task: Task | None = None) -> None:
    """Create the method's trainable parts from sample outputs of the actual pair (``task.sample_outputs`` on the first
    batch of ``samples``: a loader, or a tensor of images for classification), and move them to the context's
    device."""
    task = task if task is not None else task_of({})
    if isinstance(samples, torch.Tensor):
        samples = [Batch(samples, None, None)]
    method.build(*task.sample_outputs(student, teacher, samples, method), context)
    method.to(context.device)


def build(cfg: DictConfig, run_dir: Path, teacher_provider, world: distributed.World) -> Run:
    tcfg = cfg.trainer
    device = select_device(tcfg.device)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    if tcfg.get("num_threads"):
        torch.set_num_threads(int(tcfg.num_threads))
    precision = check_precision(str(tcfg.precision), device)
    set_deterministic(bool(tcfg.deterministic))
    seed = int(cfg.seed)
    seed_everything(seed)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    batch_size = int(tcfg.batch_size)
    if batch_size % world.size:
        raise ConfigError(f"trainer.batch_size: the global batch {batch_size} must divide evenly over {world.size} processes")
    batch_per_rank = batch_size // world.size
    task = task_of(cfg.dataset)

    data = build_data(cfg.dataset)
    method = build_method(cfg.method)
    data = task.split_training(data, method)
    strategy = strategy_of(cfg.optim)
    if reason := strategy.refusal(str(cfg.optim.name), precision, world.size):
        raise ConfigError(reason)
    student, student_info = build_student(cfg, data.num_classes, data.image_size, create=task.create_model)
    if reason := task.refusal(student, method, "student"):
        raise ConfigError(f"method={cfg.method.name} cannot use student {cfg.student.name}: {reason}")
    cache_plan = CachePlan(cfg, data, method)  # refuses teacher_cache=on here, before any teacher work
    teacher, teacher_info = _obtain_teacher(cfg, data, device, method, task, teacher_provider, world)
    if cfg.student.get("init_from_teacher"):
        if teacher is None:
            raise ConfigError(f"student.init_from_teacher: method={cfg.method.name} runs no teacher to start from")
        student_info["init"] = initialise_from_teacher(student, teacher, cfg.student)

    channels_last = resolve_channels_last(tcfg.channels_last, device)
    student.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    train_loader, sampler, test_loader, loader_kind = task.loaders(cfg, data, world, batch_per_rank, device,
                                                                   method.views, channels_last)
    steps_per_epoch = math.ceil(sampler.per_rank / batch_per_rank)
    if tcfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, int(tcfg.max_steps_per_epoch))
    schedule = schedule_of(tcfg, steps_per_epoch)
    fingerprint = weights_fingerprint(teacher) if teacher is not None else None  # the teacher's cache key
    logit_cache = cache_plan.open(teacher, fingerprint, device, schedule.epochs, channels_last)
    if logit_cache is not None:
        teacher_info = {**teacher_info, "logit_cache": str(logit_cache.directory), "logit_cache_built": logit_cache.built}

    validation_loader = None
    if data.validation is not None:
        validation_loader = task.test_loader(cfg, dataclasses.replace(data, test=data.validation), device, None,
                                             channels_last)
    context = build_context(cfg, data, device, teacher, fingerprint, task, student, validation_loader)
    size_method(method, student, teacher, test_loader, context, task)
    student_info["extra_params"] = sum(p.numel() for p in method.parameters())

    optimizer = build_optimizer(cfg.optim, list(student.parameters()) + list(method.parameters()))
    scheduler = build_scheduler(cfg.optim, optimizer, schedule.scheduler_length, schedule.unit)
    step = TrainStep(student, method, optimizer, strategy, device, teacher=teacher, logit_cache=logit_cache,
                     precision=precision, compile=bool(tcfg.compile), data_parallel=world.distributed, task=task)
    return Run(cfg=cfg, run_dir=Path(run_dir), resolved=resolved, world=world, device=device, precision=precision,
               seed=seed, batch_per_rank=batch_per_rank, task=task, data=data, student=student,
               student_info=student_info, teacher=teacher, teacher_info=teacher_info, method=method,
               train_loader=train_loader, sampler=sampler, test_loader=test_loader,
               validation_loader=validation_loader, loader_kind=loader_kind,
               optimizer=optimizer, scheduler=scheduler, step=step, schedule=schedule)


def _obtain_teacher(cfg, data, device, method: Method, task: Task, teacher_provider, world):
    """(teacher, teacher_info): the frozen teacher when the method uses one (rank 0 obtains it first, maybe
    training it; the other ranks then load it), else (None, None)."""
    if not method.uses_teacher:
        return None, None
    if teacher_provider is None:
        raise ConfigError(f"method={cfg.method.name} needs a teacher, and none can be provided here")
    if not world.main:
        distributed.barrier()
    teacher, info = teacher_provider(cfg, data, device)
    if world.main:
        distributed.barrier()
    if reason := task.refusal(teacher, method, "teacher"):
        raise ConfigError(f"method={cfg.method.name} cannot use teacher {cfg.teacher.name}: {reason}")
    seed_everything(int(cfg.seed))
    return teacher, info
