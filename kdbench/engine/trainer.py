"""One run, start (or checkpoint) to result: build, train, evaluate, checkpoint, record.

The loop knows nothing about any method: it asks the method what it needs, computes that for the student
(with grad) and the teacher (frozen, no grad), sums the named terms the method returns and logs each one.
"""

from __future__ import annotations

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
from ..errors import ConfigError
from ..io import save_torch
from ..methods import Batch, BuildContext, Method, Progress, build_method
from ..models import create_model, run_model, supports
from ..results.record import build_record, utc_now, write_record
from .optim import build_optimizer, build_scheduler
from .progress import EpochProgress
from .runtime import autocast, check_precision, epoch_seed, seed_everything, select_device, set_deterministic
from .tracking import Tracker

log = logging.getLogger("kdbench")

CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
# Keys that may differ between a run and the run it resumes.
RESUME_FREE_KEYS = ("resume", "trainer.progress", "trainer.log_every_n_steps", "trainer.num_threads", "logger")


class TrainingFailed(RuntimeError):
    """The run started but could not finish (a non-finite loss, say); recorded as status 'failed'."""


@torch.inference_mode()
def evaluate(model, loader, device, precision: str, num_classes: int, channels_last: bool = False) -> tuple[float, float]:
    """Top-1 / top-5 accuracy in percent, accumulated on the device with torchmetrics."""
    was_training = model.training
    model.eval()
    top1 = MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro").to(device)
    top5 = MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes), average="micro").to(device)
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


def _build_context(cfg, data, device, teacher) -> BuildContext:
    dcfg = cfg.dataset
    plain = IndexedDataset(data.train, build_transforms(dcfg.augment, data.image_size, dcfg.mean, dcfg.std, train=False))

    def plain_train_batches():
        loader = torch.utils.data.DataLoader(plain, batch_size=int(cfg.trainer.eval_batch_size), shuffle=False)
        for images, targets, index in loader:
            yield images.to(device), targets.to(device), index.to(device)

    return BuildContext(num_classes=data.num_classes, train_targets=train_targets(data), device=device,
                        teacher=teacher, teacher_fingerprint=weights_fingerprint(teacher) if teacher is not None else None,
                        cache_dir=Path(str(cfg.store)).expanduser() / "cache", plain_train_batches=plain_train_batches)


def forward_outputs(model, batch: Batch, method: Method):
    """The model's outputs on the batch, and on each extra view the method asked for."""
    out = run_model(model, batch.images, method.needs)
    for name in method.views:
        out.views[name] = run_model(model, batch.views[name], method.needs)
    return out


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


def train(cfg: DictConfig, run_dir: Path, teacher_provider=None) -> dict:
    """Run the configured training in ``run_dir``; returns the result record (also written as result.json).

    ``teacher_provider(cfg, data, device) -> (teacher, teacher_info)`` supplies the frozen teacher when the
    method uses one (see engine/teacher.py). Raises ConfigError for bad input before anything is trained, and
    TrainingFailed (after writing a 'failed' result) when training breaks down.
    """
    run_dir = Path(run_dir)
    started_at, t_start = utc_now(), time.perf_counter()
    tcfg = cfg.trainer
    device = select_device(tcfg.device)
    if tcfg.get("num_threads"):
        torch.set_num_threads(int(tcfg.num_threads))
    precision = check_precision(str(tcfg.precision), device)
    set_deterministic(bool(tcfg.deterministic))
    seed = int(cfg.seed)
    seed_everything(seed)
    resolved = OmegaConf.to_container(cfg, resolve=True)

    data = build_data(cfg.dataset)
    method = build_method(cfg.method)
    student = create_model(cfg.student.name, data.num_classes, image_size=data.image_size)
    if reason := supports(student, method.needs):
        raise ConfigError(f"method={cfg.method.name} cannot use student {cfg.student.name}: {reason}")
    teacher, teacher_info = (None, None)
    if method.uses_teacher:
        if teacher_provider is None:
            raise ConfigError(f"method={cfg.method.name} needs a teacher, and none can be provided here")
        teacher, teacher_info = teacher_provider(cfg, data, device)
        if reason := supports(teacher, method.needs):
            raise ConfigError(f"method={cfg.method.name} cannot use teacher {cfg.teacher.name}: {reason}")
        seed_everything(seed)  # the same draws below whether the teacher was loaded or trained just now

    channels_last = bool(tcfg.channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    student.to(device=device, memory_format=memory_format)
    generator = torch.Generator()
    train_loader, test_loader = build_loaders(data, cfg.dataset, int(tcfg.batch_size), int(tcfg.eval_batch_size),
                                              pin_memory=device.type == "cuda", generator=generator, views=method.views)

    # Size the method's trainable parts from a forward of the actual pair (never from channel tables).
    probe = next(iter(test_loader))[0][:2].to(device)
    with torch.no_grad():
        student.eval()
        s_probe = run_model(student, probe, method.needs)
        t_probe = run_model(teacher, probe, method.needs) if teacher is not None else None
        student.train()
    method.build(s_probe, t_probe, _build_context(cfg, data, device, teacher))
    method.to(device)
    extra_params = sum(p.numel() for p in method.parameters())

    optimizer = build_optimizer(cfg.optim, list(student.parameters()) + list(method.parameters()))
    epochs = int(tcfg.epochs)
    if epochs < 1:
        raise ConfigError(f"trainer.epochs: must be >= 1, got {epochs}")
    scheduler = build_scheduler(cfg.optim, optimizer, epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    train_step = torch.compile(student) if tcfg.compile else student

    history: list[dict] = []
    start_epoch, run_id, wandb_id, train_time, train_images = 1, None, None, 0.0, 0
    best_top1 = -math.inf
    ckpt_dir = run_dir / CHECKPOINT_DIR
    if (resume_from := _resume_path(cfg.get("resume"), run_dir)) is not None:
        ck = torch.load(resume_from, map_location=device, weights_only=False)
        if diff := _config_difference(ck.get("config", {}), resolved):
            raise ConfigError(f"resume: {resume_from} was written by another configuration (differs in {', '.join(diff[:5])})")
        student.load_state_dict(ck["model"])
        method.load_state_dict(ck["method"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        history, start_epoch = ck["history"], ck["epoch"] + 1
        run_id, wandb_id = ck["run_id"], ck.get("wandb_id")
        train_time, train_images = ck.get("train_time_s", 0.0), ck.get("train_images", 0)
        best_top1 = max((h["top1"] for h in history), default=-math.inf)
        log.info("resuming from %s at epoch %d", resume_from, start_epoch)
    run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    name_parts = [cfg.method.name, cfg.teacher.name if teacher is not None else None, cfg.student.name, f"s{seed}"]
    tracker = Tracker(cfg.logger, run_dir, resolved, run_id=wandb_id,
                      default_name="-".join(str(p) for p in name_parts if p is not None))
    record_args = dict(
        run_id=run_id, started_at=started_at, config=resolved,
        dataset={"name": data.name, "num_classes": data.num_classes, "image_size": data.image_size,
                 "train_size": len(data.train), "test_size": len(data.test)},
        teacher=teacher_info,
        student={"name": str(cfg.student.name), "resolved": student.kdbench_name,
                 "params": sum(p.numel() for p in student.parameters()), "extra_params": extra_params},
        method={"name": str(cfg.method.name), "hparams": method.hparams()},
        seed=seed, epochs=epochs, device=str(device), precision=precision, run_dir=run_dir,
    )
    if teacher_info:
        tracker.summary({"teacher/top1": teacher_info["top1"], "teacher/top5": teacher_info["top5"]})

    steps_per_epoch = len(train_loader)
    if tcfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, int(tcfg.max_steps_per_epoch))
    log_every = max(int(tcfg.log_every_n_steps), 1)
    status, failure = "failed", None
    try:
        with EpochProgress(bool(tcfg.progress), epochs, steps_per_epoch, int(tcfg.batch_size)) as bar:
            for epoch in range(start_epoch, epochs + 1):
                # Shuffling and augmentation are a function of (seed, epoch): exact resume at epoch boundaries.
                seed_everything(epoch_seed(seed, epoch))
                generator.manual_seed(epoch_seed(seed, epoch))
                student.train()
                method.train()
                lr = optimizer.param_groups[0]["lr"]
                names: list[str] = []
                sums = torch.zeros(0, device=device)
                finite = torch.ones((), dtype=torch.bool, device=device)
                seen = 0
                bar.start_epoch(epoch)
                t_epoch = time.perf_counter()
                for step, (images, targets, index, *extra) in enumerate(train_loader):
                    if step >= steps_per_epoch:
                        break
                    views = {k: to_device(v, device, channels_last) for k, v in (extra[0] if extra else {}).items()}
                    batch = Batch(to_device(images, device, channels_last), targets.to(device, non_blocking=True),
                                  index.to(device, non_blocking=True), views)
                    progress = Progress(epoch=epoch, epochs=epochs, step=(epoch - 1) * steps_per_epoch + step,
                                        steps_per_epoch=steps_per_epoch)
                    batch = method.prepare(batch, progress)
                    with autocast(precision, device):
                        s_out = forward_outputs(train_step, batch, method)
                        t_out = None
                        if teacher is not None:
                            with torch.no_grad():
                                t_out = forward_outputs(teacher, batch, method)
                        terms = method(s_out, t_out, batch, progress)
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
                    if (step + 1) % log_every == 0:
                        if not bool(finite):
                            raise TrainingFailed(f"non-finite loss at epoch {epoch}, step {step + 1}")
                        current = (sums / seen).tolist()
                        bar.update(step + 1, {"loss": current[0], **dict(zip(names, current[1:]))})
                        tracker.log({"train/loss": current[0], **{f"train/{k}": v for k, v in zip(names, current[1:])}},
                                    step=progress.step + 1)
                    else:
                        bar.update(step + 1)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                epoch_time = time.perf_counter() - t_epoch
                if not bool(finite):
                    raise TrainingFailed(f"non-finite loss in epoch {epoch}")
                scheduler.step()
                means = (sums / max(seen, 1)).tolist()
                top1, top5 = evaluate(student, test_loader, device, precision, data.num_classes, channels_last)
                train_time += epoch_time
                train_images += seen
                entry = {"epoch": epoch, "lr": lr, "loss": means[0] if means else None,
                         "losses": dict(zip(names, means[1:])), "top1": top1, "top5": top5,
                         "images_per_s": round(seen / epoch_time, 1), "epoch_time_s": round(epoch_time, 3)}
                history.append(entry)
                bar.end_epoch(entry)
                log.info("epoch %d/%d  loss %.4f  %s  top1 %.2f  top5 %.2f  lr %.4g  %.0f img/s", epoch, epochs,
                         entry["loss"], " ".join(f"{k} {v:.4f}" for k, v in entry["losses"].items()), top1, top5, lr,
                         entry["images_per_s"])
                tracker.log({"val/top1": top1, "val/top5": top5, "lr": lr, "epoch": epoch,
                             "train/images_per_s": entry["images_per_s"], "train/epoch_loss": entry["loss"],
                             **{f"train/epoch_{k}": v for k, v in entry["losses"].items()}},
                            step=epoch * steps_per_epoch)
                if top1 > best_top1:
                    best_top1 = top1
                    save_torch(ckpt_dir / BEST, {"model": student.state_dict(), "epoch": epoch, "best_acc": top1})
                save_torch(ckpt_dir / LAST, {
                    "kdbench": 1, "model": student.state_dict(), "method": method.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "epoch": epoch, "history": history, "run_id": run_id,
                    "wandb_id": tracker.run_id, "config": resolved, "train_time_s": train_time,
                    "train_images": train_images,
                })
        status = "completed"
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
        write_record(run_dir, record)
    return record
