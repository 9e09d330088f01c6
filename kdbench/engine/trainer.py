"""One run, start (or checkpoint) to result: build, train, evaluate, checkpoint, record.

The loop knows nothing about any method: it asks the method what it needs, computes that for the student
(with grad) and the teacher (frozen, no grad), sums the named terms the method returns and logs each one.
Data parallel (torch.distributed DDP) when launched with several processes; a stop signal (pre-emption)
checkpoints mid-epoch, and a resumed run continues from that exact step.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics.classification import MulticlassAccuracy

from ..data import build_data, build_loaders, train_targets
from ..data.base import IndexedDataset, build_transforms
from ..data.augment import view_ids
from ..data.device_loader import DeviceTestLoader, DeviceTrainLoader, device_loadable, uint8_images
from ..data.sampler import EpochSampler, ShardSampler
from ..errors import ConfigError
from ..io import save_torch
from ..methods import Batch, BuildContext, Method, Progress, build_method
from ..models import ModelOutput, create_model, run_model, supports
from ..results.record import build_record, utc_now, write_record
from .optim import build_optimizer, build_scheduler
from .progress import EpochProgress
from . import distributed, preemption
from .logit_cache import TeacherLogitCache
from .runtime import autocast, check_precision, epoch_seed, seed_everything, select_device, set_deterministic
from .tracking import Tracker

log = logging.getLogger("kdbench")

CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
# Keys that may differ between a run and the run it resumes.
RESUME_FREE_KEYS = ("resume", "trainer.progress", "trainer.log_every_n_steps", "trainer.num_threads", "logger")


class TrainingFailed(RuntimeError):
    """The run started but could not finish (a non-finite loss, say); recorded as status 'failed'."""


class StudentStep(torch.nn.Module):
    """Everything trained, as one module: the student and the method's parts. Its forward is one step's loss
    terms, so data parallelism wraps it whole (gradients of connectors and projectors are synchronised too)."""

    def __init__(self, student, method, compiled=None):
        super().__init__()
        self.student, self.method = student, method
        # the compiled student shares the student's parameters: kept out of the module tree (no second copy of
        # its keys, no len() on the compiled wrapper)
        self.__dict__["_forward_student"] = compiled if compiled is not None else student

    def forward(self, batch: Batch, teacher_out, progress: Progress) -> dict[str, torch.Tensor]:
        return self.method(forward_outputs(self._forward_student, batch, self.method), teacher_out, batch, progress)


def rng_state() -> dict:
    import random

    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"].cpu())
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@torch.inference_mode()
def evaluate(model, loader, device, precision: str, num_classes: int, channels_last: bool = False,
             sharded: bool = False) -> tuple[float, float]:
    """Top-1 / top-5 accuracy in percent, accumulated on the device with torchmetrics; ``sharded``: the loader
    holds this rank's share of the test set and the counts are summed over the process group."""
    was_training = model.training
    model.eval()
    kw = dict(average="micro", sync_on_compute=sharded)
    top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, **kw).to(device)
    top5 = MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes), **kw).to(device)
    for images, targets, _ in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        with autocast(precision, device):
            logits = model(images)
        top1.update(logits.float(), targets)
        top5.update(logits.float(), targets)
    model.train(was_training)
    return round(100.0 * top1.compute().item(), 4), round(100.0 * top5.compute().item(), 4)


def to_device(images: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def _flat(cfg: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _resume_path(resume, run_dir: Path) -> Path | None:
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


def _check_same_configuration(path: Path, checkpoint: dict, resolved: dict) -> None:
    if diff := _config_difference(checkpoint.get("config", {}), resolved):
        raise ConfigError(f"resume: {path} was written by another configuration (differs in {', '.join(diff[:5])})")


def check_resume_source(cfg: DictConfig) -> None:
    """Before a run starts: ``resume=<checkpoint or run directory>`` must exist and have been written by this
    configuration (the tensors are memory-mapped, not read). ``resume=true`` is checked by the run itself."""
    resume = cfg.get("resume")
    if resume is None or resume is True or str(resume).lower() in ("", "false", "true"):
        return
    path = _resume_path(resume, Path("."))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise ConfigError(f"resume: cannot read checkpoint {path} ({type(e).__name__})") from None
    _check_same_configuration(path, checkpoint, OmegaConf.to_container(cfg, resolve=True))


def _config_difference(saved: dict, current: dict) -> list[str]:
    a, b = _flat(saved), _flat(current)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(RESUME_FREE_KEYS))
    return keys


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over a model's state_dict (names, shapes, bytes): identifies teacher weights for caches."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _build_context(cfg, data, device, teacher, fingerprint: str | None) -> BuildContext:
    dcfg = cfg.dataset
    plain = IndexedDataset(data.train, build_transforms(dcfg.augment, data.image_size, dcfg.mean, dcfg.std, train=False))

    def plain_train_batches():
        loader = torch.utils.data.DataLoader(plain, batch_size=int(cfg.trainer.eval_batch_size), shuffle=False)
        for images, targets, index in loader:
            yield images.to(device), targets.to(device), index.to(device)

    return BuildContext(num_classes=data.num_classes, train_targets=train_targets(data), device=device,
                        teacher=teacher, teacher_fingerprint=fingerprint,
                        cache_dir=Path(str(cfg.store)).expanduser() / "cache", plain_train_batches=plain_train_batches)


def forward_outputs(model, batch: Batch, method: Method, role: str = "student"):
    """The model's outputs on the batch, and on each extra view the method asked for."""
    needs = method.needs_of(role)
    with batch_statistics(model, role == "teacher" and method.teacher_batch_stats):
        out = run_model(model, batch.images, needs)
        for name in method.views:
            out.views[name] = run_model(model, batch.views[name], needs)
    return out


@contextlib.contextmanager
def batch_statistics(model: torch.nn.Module, enabled: bool = True):
    """Within the block, the model's BN layers normalise with each batch's own statistics (train-mode BN)
    while their running statistics and counters stay exactly as they were."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] if enabled else []
    saved = [(m.training, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in norms]
    for m in norms:
        m.train()
        m.momentum = 0.0  # running <- (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, (training, momentum, count) in zip(norms, saved):
            m.train(training)
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def optimizer_step(optimizer, scaler, terms: dict[str, torch.Tensor], task_terms) -> torch.Tensor:
    """Backward and step; an optimiser that separates distillation gradients (DOT) gets them apart."""
    loss = sum(terms.values())
    optimizer.zero_grad(set_to_none=True)
    if getattr(optimizer, "separates_distillation", False):
        task = [v for k, v in terms.items() if k in task_terms]
        distill = [v for k, v in terms.items() if k not in task_terms]
        if not task or not distill:
            raise ConfigError(f"optim.name: dot needs task and distillation terms; this method returns {', '.join(terms)}")
        sum(distill).backward(retain_graph=True)
        optimizer.stash_distillation_grads()
        optimizer.zero_grad(set_to_none=True)
        sum(task).backward()
        optimizer.step()
        return loss
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


def _loaders(cfg, data, world, batch_per_rank: int, device, views, channels_last: bool):
    """Training loader (EpochSampler: seeded order and augmentation, sharded by rank), its sampler, the test
    loader (sharded) and which kind they are: ``device`` (dataset resident on the device) or ``torch``."""
    dcfg = cfg.dataset
    sampler = EpochSampler(len(data.train), int(cfg.seed), shuffle=True, rank=world.rank, world=world.size)
    wanted = str(cfg.trainer.loader)
    reason = device_loadable(data, str(dcfg.augment)) or ("the method asks for extra views" if views else None)
    if wanted == "device" and reason:
        raise ConfigError(f"trainer.loader: device loader unavailable: {reason}; valid here: torch, auto")
    if wanted in ("device", "auto") and not reason:
        train_loader = DeviceTrainLoader(data.train, sampler, batch_per_rank, str(dcfg.augment), dcfg.mean, dcfg.std,
                                         device, channels_last)
        test_loader = DeviceTestLoader(data.test, int(cfg.trainer.eval_batch_size), dcfg.mean, dcfg.std, device,
                                       world.rank, world.size, channels_last)
        return train_loader, sampler, test_loader, "device"
    train_loader, test_loader = build_loaders(
        data, dcfg, batch_per_rank, int(cfg.trainer.eval_batch_size), pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0), views=views, train_sampler=sampler,
        test_sampler=ShardSampler(len(data.test), world.rank, world.size))
    return train_loader, sampler, test_loader, "torch"


def _cache_refusals(cfg, data, method) -> list[str]:
    """Why this run cannot use the teacher-logit cache (none: it can). Known before the teacher is obtained."""
    reasons = []
    if set(method.needs_of("teacher")) - {"logits"} or method.teacher_batch_stats:
        reasons.append("the method needs more of the teacher than its logits")
    if method.views or type(method).prepare is not Method.prepare:
        reasons.append("the method changes or adds to the batch")
    if str(cfg.dataset.augment) not in ("cifar",):
        reasons.append(f"augmentation '{cfg.dataset.augment}' is not the 162-view reference one")
    if uint8_images(data.train) is None:
        reasons.append(f"dataset {data.name} is not held in memory as uint8 images")
    return reasons


def _teacher_cache(cfg, data, teacher, fingerprint: str | None, refusals: list[str], device, epochs: int,
                   channels_last: bool) -> TeacherLogitCache | None:
    """The teacher-logit cache when the run can use it (``refusals`` empty: a method that needs only the
    teacher's logits, on unchanged batches, under the reference CIFAR augmentation), per ``trainer.teacher_cache``."""
    wanted = str(cfg.trainer.teacher_cache)
    if teacher is None or wanted == "off" or refusals:
        return None
    root = Path(str(cfg.store)).expanduser() / "cache"
    images, targets = uint8_images(data.train)
    if wanted == "auto" and epochs < 162 and not TeacherLogitCache.exists(root, fingerprint, images, targets,
                                                                          cfg.dataset.mean, cfg.dataset.std):
        return None  # building costs 162 teacher passes over the data: more than this run's own
    return TeacherLogitCache.open(root, teacher, fingerprint, images, targets, cfg.dataset.mean, cfg.dataset.std,
                                  data.num_classes, device, channels_last=channels_last)


def train(cfg: DictConfig, run_dir: Path, teacher_provider=None, world: distributed.World | None = None) -> dict:
    """Run the configured training in ``run_dir``; returns the result record (also written as result.json).

    ``teacher_provider(cfg, data, device) -> (teacher, teacher_info)`` supplies the frozen teacher when the
    method uses one (see engine/teacher.py). ``world``: this process's place in a data-parallel job (the
    process group is already initialised); None trains in this process alone. Raises ConfigError for bad input
    before anything is trained, TrainingFailed (after writing a 'failed' result) when training breaks down, and
    preemption.Preempted (after a mid-epoch checkpoint) when a stop signal arrives.
    """
    run_dir = Path(run_dir)
    world = world or distributed.World()
    started_at, t_start = utc_now(), time.perf_counter()
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

    data = build_data(cfg.dataset)
    method = build_method(cfg.method)
    if world.distributed and cfg.optim.name == "dot":
        raise ConfigError("optim.name: dot takes two backward passes per step, which data-parallel training does not "
                          "support; run dot in a single process")
    student = create_model(cfg.student.name, data.num_classes, image_size=data.image_size)
    if reason := supports(student, method.needs):
        raise ConfigError(f"method={cfg.method.name} cannot use student {cfg.student.name}: {reason}")
    cache_refusals = _cache_refusals(cfg, data, method)
    if cache_refusals and str(tcfg.teacher_cache) == "on" and method.uses_teacher:  # before any teacher work
        raise ConfigError(f"trainer.teacher_cache: cannot be used here: {'; '.join(cache_refusals)}; "
                          "valid here: off, auto")
    teacher, teacher_info = (None, None)
    if method.uses_teacher:
        if teacher_provider is None:
            raise ConfigError(f"method={cfg.method.name} needs a teacher, and none can be provided here")
        if not world.main:
            distributed.barrier()  # rank 0 obtains (maybe trains) the teacher first; the others then load it
        teacher, teacher_info = teacher_provider(cfg, data, device)
        if world.main:
            distributed.barrier()
        if reason := supports(teacher, method.needs_of("teacher")):
            raise ConfigError(f"method={cfg.method.name} cannot use teacher {cfg.teacher.name}: {reason}")
        seed_everything(seed)  # the same draws below whether the teacher was loaded or trained just now

    channels_last = bool(tcfg.channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    student.to(device=device, memory_format=memory_format)
    train_loader, sampler, test_loader, loader_kind = _loaders(cfg, data, world, batch_per_rank, device, method.views,
                                                               channels_last)
    epochs = int(tcfg.epochs)
    fingerprint = weights_fingerprint(teacher) if teacher is not None else None  # the teacher's cache key
    logit_cache = _teacher_cache(cfg, data, teacher, fingerprint, cache_refusals, device, epochs, channels_last)
    if logit_cache is not None:
        teacher_info = {**teacher_info, "logit_cache": str(logit_cache.directory), "logit_cache_built": logit_cache.built}

    # Size the method's trainable parts from a forward of the actual pair (never from channel tables).
    probe = next(iter(test_loader))[0][:2].to(device)
    with torch.no_grad():
        student.eval()
        s_probe = run_model(student, probe, method.needs)
        t_probe = run_model(teacher, probe, method.needs_of("teacher")) if teacher is not None else None
        student.train()
    method.build(s_probe, t_probe, _build_context(cfg, data, device, teacher, fingerprint))
    method.to(device)
    extra_params = sum(p.numel() for p in method.parameters())

    optimizer = build_optimizer(cfg.optim, list(student.parameters()) + list(method.parameters()))
    if epochs < 1:
        raise ConfigError(f"trainer.epochs: must be >= 1, got {epochs}")
    scheduler = build_scheduler(cfg.optim, optimizer, epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step_module = StudentStep(student, method, torch.compile(student) if tcfg.compile else None)
    teacher_forward = torch.compile(teacher) if tcfg.compile and teacher is not None and logit_cache is None else teacher
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # Buffers stay per rank during training (memory banks, BN running statistics); the student's BN
        # statistics are taken from rank 0 before each evaluation and checkpoint.
        step_module = DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
            find_unused_parameters=extra_params > 0)

    history: list[dict] = []
    start_epoch, run_id, wandb_id, train_time, train_images = 1, None, None, 0.0, 0
    partial = None
    best_top1 = -math.inf
    ckpt_dir = run_dir / CHECKPOINT_DIR
    if (resume_from := _resume_path(cfg.get("resume"), run_dir)) is not None:
        ck = torch.load(resume_from, map_location=device, weights_only=False)
        _check_same_configuration(resume_from, ck, resolved)
        student.load_state_dict(ck["model"])
        method.load_state_dict(ck["method"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        history, start_epoch = ck["history"], ck["epoch"] + 1
        run_id, wandb_id = ck["run_id"], ck.get("wandb_id")
        train_time, train_images = ck.get("train_time_s", 0.0), ck.get("train_images", 0)
        partial = ck.get("partial")
        best_top1 = max((h["top1"] for h in history), default=-math.inf)
        where = f"epoch {start_epoch}" + (f", step {partial['step']}" if partial else "")
        log.info("resuming from %s at %s", resume_from, where)
    run_id = run_id or distributed.broadcast_object(f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")

    name_parts = [cfg.method.name, cfg.teacher.name if teacher is not None else None, cfg.student.name, f"s{seed}"]
    logger_cfg = cfg.logger if world.main else OmegaConf.create({"mode": "disabled"})
    tracker = Tracker(logger_cfg, run_dir, resolved, run_id=wandb_id,
                      default_name="-".join(str(p) for p in name_parts if p is not None))
    record_args = dict(
        run_id=run_id, started_at=started_at, config=resolved,
        dataset={"name": data.name, "num_classes": data.num_classes, "image_size": data.image_size,
                 "train_size": len(data.train), "test_size": len(data.test), "loader": loader_kind},
        teacher=teacher_info,
        student={"name": str(cfg.student.name), "resolved": student.kdbench_name,
                 "params": sum(p.numel() for p in student.parameters()), "extra_params": extra_params},
        method={"name": str(cfg.method.name), "hparams": method.hparams()},
        seed=seed, epochs=epochs, device=str(device), precision=precision, run_dir=run_dir,
    )
    if world.distributed:
        record_args["config"] = {**resolved, "distributed": {"world_size": world.size, "batch_per_rank": batch_per_rank}}
    if teacher_info:
        tracker.summary({"teacher/top1": teacher_info["top1"], "teacher/top5": teacher_info["top5"]})

    steps_per_epoch = math.ceil(sampler.per_rank / batch_per_rank)
    if tcfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, int(tcfg.max_steps_per_epoch))
    log_every = max(int(tcfg.log_every_n_steps), 1)

    def checkpoint(epoch_done: int, partial_state: dict | None = None) -> None:
        """last.pt: everything a resume needs (rank 0 writes; BN statistics are rank 0's)."""
        if not world.main:
            return
        save_torch(ckpt_dir / LAST, {
            "kdbench": 1, "model": student.state_dict(), "method": method.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch_done, "history": history, "run_id": run_id,
            "wandb_id": tracker.run_id, "config": resolved, "train_time_s": train_time,
            "train_images": train_images, "partial": partial_state,
        })

    status, failure = "failed", None
    try:
        with EpochProgress(bool(tcfg.progress) and world.main, epochs, steps_per_epoch, batch_size) as bar:
            for epoch in range(start_epoch, epochs + 1):
                # Shuffling and augmentation are a function of (seed, epoch, sample): exact resume anywhere.
                seed_everything(epoch_seed(seed, epoch))
                first_step, names, seen, elapsed = 0, [], 0, 0.0
                sums = torch.zeros(0, device=device)
                finite = torch.ones((), dtype=torch.bool, device=device)
                if partial is not None and partial["epoch"] == epoch:
                    first_step, names, seen, elapsed = partial["step"], partial["names"], partial["seen"], partial["elapsed"]
                    sums = partial["sums"].to(device)
                    finite = torch.tensor(partial["finite"], device=device)
                    set_rng_state(partial["rng"][world.rank] if isinstance(partial["rng"], list) else partial["rng"])
                partial = None
                sampler.set_epoch(epoch, start=first_step * batch_per_rank)
                step_module.train()
                lr = optimizer.param_groups[0]["lr"]
                bar.start_epoch(epoch)
                t_epoch = time.perf_counter() - elapsed
                for step, (images, targets, index, *extra) in enumerate(train_loader, start=first_step):
                    if step >= steps_per_epoch:
                        break
                    extra = extra[0] if extra else None  # device loader: view ids; DataLoader: extra views
                    views = {k: to_device(v, device, channels_last) for k, v in extra.items()} if isinstance(extra, dict) else {}
                    batch = Batch(to_device(images, device, channels_last), targets.to(device, non_blocking=True),
                                  index.to(device, non_blocking=True), views)
                    progress = Progress(epoch=epoch, epochs=epochs, step=(epoch - 1) * steps_per_epoch + step,
                                        steps_per_epoch=steps_per_epoch)
                    batch = method.prepare(batch, progress)
                    with autocast(precision, device):
                        t_out = None
                        if logit_cache is not None:
                            if not isinstance(extra, torch.Tensor):  # DataLoader path: the views from the seeds
                                extra = torch.from_numpy(view_ids(epoch_seed(seed, epoch), index.numpy())).to(device)
                            t_out = ModelOutput(logits=logit_cache.lookup(batch.index, extra))
                        elif teacher is not None:
                            with torch.no_grad():
                                t_out = forward_outputs(teacher_forward, batch, method, role="teacher")
                        terms = step_module(batch, t_out, progress)
                    loss = optimizer_step(optimizer, scaler, terms, method.task_terms)
                    # Running sums stay on the device: no host synchronisation per step.
                    n = batch.images.shape[0]
                    if not names:
                        names = list(terms)
                        sums = torch.zeros(len(names) + 1, device=device)
                    values = torch.stack([loss.detach().float()] + [terms[k].detach().float() for k in names])
                    sums += values * n
                    finite &= torch.isfinite(values).all()
                    seen += n
                    at_log = (step + 1) % log_every == 0
                    if at_log:
                        if not bool(finite):
                            raise TrainingFailed(f"non-finite loss at epoch {epoch}, step {step + 1}")
                        total = distributed.all_reduce_sum(torch.cat([sums, torch.tensor([float(seen)], device=device)]))
                        current = (total[:-1] / total[-1]).tolist()
                        bar.update(step + 1, {"loss": current[0], **dict(zip(names, current[1:]))})
                        tracker.log({"train/loss": current[0], **{f"train/{k}": v for k, v in zip(names, current[1:])}},
                                    step=progress.step + 1)
                    else:
                        bar.update(step + 1)
                    # A stop signal: checkpoint this exact point (after step + 1 steps) and stop.
                    stop = preemption.requested() is not None
                    if world.distributed:
                        stop = distributed.any_rank(stop, device) if at_log else False
                    if stop and step + 1 < steps_per_epoch:
                        rngs = [rng_state()]
                        if world.distributed:
                            gathered = [None] * world.size
                            torch.distributed.all_gather_object(gathered, rngs[0])
                            rngs = gathered
                        checkpoint(epoch - 1, {"epoch": epoch, "step": step + 1, "names": names,
                                               "sums": distributed.all_reduce_sum(sums.clone()).cpu() if world.distributed else sums.cpu(),
                                               "seen": seen, "finite": bool(finite),
                                               "elapsed": time.perf_counter() - t_epoch, "rng": rngs})
                        distributed.barrier()
                        sig = preemption.requested()
                        raise preemption.Preempted(f"stopped by {sig.name if sig else 'a signal on another rank'} at "
                                                   f"epoch {epoch}, step {step + 1}/{steps_per_epoch}; checkpoint "
                                                   f"{ckpt_dir / LAST}; resume=true continues from there")
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                epoch_time = time.perf_counter() - t_epoch
                total = distributed.all_reduce_sum(torch.cat([sums, torch.tensor([float(seen)], device=device),
                                                              (~finite).float().reshape(1)]))
                if total[-1] > 0:
                    raise TrainingFailed(f"non-finite loss in epoch {epoch}")
                seen_all = int(total[-2].item())
                scheduler.step()
                means = (total[:-2] / max(seen_all, 1)).tolist()
                if world.distributed:  # evaluate and checkpoint with rank 0's BN statistics on every rank
                    for buffer in student.buffers():
                        torch.distributed.broadcast(buffer, 0)
                top1, top5 = evaluate(student, test_loader, device, precision, data.num_classes, channels_last,
                                      sharded=world.distributed)
                train_time += epoch_time
                train_images += seen_all
                entry = {"epoch": epoch, "lr": lr, "loss": means[0] if means else None,
                         "losses": dict(zip(names, means[1:])), "top1": top1, "top5": top5,
                         "images_per_s": round(seen_all / epoch_time, 1), "epoch_time_s": round(epoch_time, 3)}
                history.append(entry)
                bar.end_epoch(entry)
                log.info("epoch %d/%d  loss %.4f  %s  top1 %.2f  top5 %.2f  lr %.4g  %.0f img/s", epoch, epochs,
                         entry["loss"], " ".join(f"{k} {v:.4f}" for k, v in entry["losses"].items()), top1, top5, lr,
                         entry["images_per_s"])
                tracker.log({"val/top1": top1, "val/top5": top5, "lr": lr, "epoch": epoch,
                             "train/images_per_s": entry["images_per_s"], "train/epoch_loss": entry["loss"],
                             **{f"train/epoch_{k}": v for k, v in entry["losses"].items()}},
                            step=epoch * steps_per_epoch)
                if top1 > best_top1 and world.main:
                    best_top1 = top1
                    save_torch(ckpt_dir / BEST, {"model": student.state_dict(), "epoch": epoch, "best_acc": top1})
                checkpoint(epoch)
        status = "completed"
    except preemption.Preempted as e:
        status, failure = "interrupted", str(e)
        raise
    except TrainingFailed as e:
        failure = str(e)
        raise
    except KeyboardInterrupt:
        failure = "interrupted (KeyboardInterrupt)"
        raise
    except Exception as e:
        failure = f"{type(e).__name__}: {e}".splitlines()[0]
        raise TrainingFailed(failure) from e
    finally:
        record = build_record(
            status=status, failure=failure, history=history, wall_time_s=time.perf_counter() - t_start,
            images_per_s=(train_images / train_time) if train_time > 0 else None,
            wandb_dir=tracker.run_path, **record_args,
        )
        tracker.summary({k: v for k, v in record["metrics"].items() if v is not None} | {"status": status})
        tracker.finish(failed=status != "completed")
        if world.main:
            write_record(run_dir, record)
    return record
