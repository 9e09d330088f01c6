"""The loop phase: optimiser steps in evaluation intervals (an epoch, or N iterations), then evaluate, log and
checkpoint. The step itself is :class:`~kdbench.engine.step.TrainStep`; scoring is the task's.

Shuffling and augmentation are a function of (seed, epoch, sample), so a run resumes exactly anywhere, also in
the middle of an interval (a stop signal checkpoints the running sums and every rank's RNG state). Running loss
sums stay on the device and are read at the logging cadence only: no host synchronisation per step.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from .. import distributed
from ..data.sampler import epoch_seed
from ..errors import ConfigError, TrainingFailed
from ..methods import Progress
from ..models.outputs import ModelOutput, run_model
from . import preemption
from .runtime import autocast, seed_everything
from .state import LAST, Partial, TrainState, rng_state, save_best, set_rng_state

log = logging.getLogger("kdbench")


@dataclass(frozen=True)
class Schedule:
    """How long a run trains and how often it evaluates, in optimiser steps. ``unit`` is what the learning-rate
    schedule counts: ``epoch`` (stepped after each epoch, an evaluation per epoch) or ``iteration`` (stepped after
    every optimiser step, an evaluation every ``interval`` steps and at the end)."""

    unit: str
    total_steps: int
    steps_per_epoch: int
    interval: int

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    @property
    def intervals(self) -> int:
        return math.ceil(self.total_steps / self.interval)

    @property
    def scheduler_length(self) -> int:
        return self.epochs if self.unit == "epoch" else self.total_steps


def schedule_of(tcfg, steps_per_epoch: int) -> Schedule:
    """``trainer.iterations`` (with ``trainer.eval_every`` iterations) or else ``trainer.epochs``."""
    if tcfg.get("iterations"):
        total = int(tcfg.iterations)
        interval = int(tcfg.get("eval_every") or total)
        if total < 1 or interval < 1:
            raise ConfigError(f"trainer.iterations / trainer.eval_every: must be >= 1, got {total} / {interval}")
        return Schedule("iteration", total, steps_per_epoch, min(interval, total))
    epochs = int(tcfg.epochs)
    if epochs < 1:
        raise ConfigError(f"trainer.epochs: must be >= 1, got {epochs}")
    return Schedule("epoch", epochs * steps_per_epoch, steps_per_epoch, steps_per_epoch)


def batches_from(run, step: int, rng: dict | None = None):
    """Yields ``(epoch, batch)`` from optimiser step ``step`` on, epoch after epoch: each epoch reseeds the RNGs
    from (seed, epoch) and starts the sampler where the step falls (``rng``: the state to continue from instead,
    after a mid-interval resume)."""
    per_epoch = run.schedule.steps_per_epoch
    while True:
        epoch, offset = divmod(step, per_epoch)
        epoch += 1
        seed_everything(epoch_seed(run.seed, epoch))
        if rng is not None:
            set_rng_state(rng)
            rng = None
        run.sampler.set_epoch(epoch, start=offset * run.batch_per_rank)
        for batch in run.train_loader:
            yield epoch, batch
            step += 1
            if step % per_epoch == 0:
                break


class Sums:
    """Sample-weighted running sums of the loss and each term, on the device."""

    def __init__(self, device, partial: Partial | None = None):
        self.device = device
        if partial is None:
            self.names, self.sums, self.seen, self.elapsed = [], torch.zeros(0, device=device), 0, 0.0
            self.finite = torch.ones((), dtype=torch.bool, device=device)
        else:
            self.names, self.seen, self.elapsed = partial.names, partial.seen, partial.elapsed
            self.sums = partial.sums.to(device)
            self.finite = torch.tensor(partial.finite, device=device)

    def add(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], n: int) -> None:
        if not self.names:
            self.names = list(terms)
            self.sums = torch.zeros(len(self.names) + 1, device=self.device)
        values = torch.stack([loss.detach().float()] + [terms[k].detach().float() for k in self.names])
        self.sums += values * n
        self.finite &= torch.isfinite(values).all()
        self.seen += n

    def means(self) -> dict[str, float]:
        """The running means over every rank (one host synchronisation)."""
        total = distributed.all_reduce_sum(torch.cat([self.sums, torch.tensor([float(self.seen)], device=self.device)]))
        current = (total[:-1] / total[-1]).tolist()
        return {"loss": current[0], **dict(zip(self.names, current[1:]))}


def checkpoint(run, state: TrainState) -> None:
    """last.pt: everything a resume needs (rank 0 writes; BN statistics are rank 0's). A write that fails (a full
    disk, say) stops the run as failed, the previous checkpoint left in place."""
    if run.world.main:
        path = run.ckpt_dir / LAST
        try:
            state.save(path, run.resolved, run.checkpoint_modules())
        except OSError as e:
            raise TrainingFailed(f"cannot write checkpoint {path}: {e.strerror or e}") from e


def train_loop(run, state: TrainState, tracker, bar) -> None:
    """Train from ``state`` to the end of the schedule, appending one history entry per evaluation."""
    sched, world, device, task = run.schedule, run.world, run.device, run.task
    log_every = max(int(run.cfg.trainer.log_every_n_steps), 1)
    partial, state.partial = state.partial, None
    done_in_interval = partial.step if partial is not None else 0
    batches = batches_from(run, state.step + done_in_interval, partial.rng[world.rank] if partial else None)
    while state.step < sched.total_steps:
        interval, start = state.epoch + 1, state.step
        end = min(start + sched.interval, sched.total_steps)
        sums = Sums(device, partial)
        lr = partial.lr if partial is not None and partial.lr is not None else run.optimizer.param_groups[0]["lr"]
        partial = None
        run.step.train()
        bar.start_epoch(interval)
        t0 = time.perf_counter() - sums.elapsed
        for step in range(start + done_in_interval, end):
            epoch, batch = next(batches)
            progress = Progress(epoch=epoch, epochs=sched.epochs, step=step, steps_per_epoch=sched.steps_per_epoch)
            loss, terms = run.step(batch, progress)
            if sched.unit == "iteration":
                run.scheduler.step()
            sums.add(loss, terms, len(batch))
            done = step + 1 - start
            at_log = done % log_every == 0
            if at_log:
                if not bool(sums.finite):
                    raise TrainingFailed(f"non-finite loss at epoch {interval}, step {done}")
                means = sums.means()
                bar.update(done, means)
                tracker.log({f"train/{k}": v for k, v in means.items()}, step=step + 1)
            else:
                bar.update(done)
            # A stop signal: checkpoint this exact point (after ``done`` steps of the interval) and stop.
            stop = preemption.requested() is not None
            if world.distributed:
                stop = distributed.any_rank(stop, device) if at_log else False
            if stop and step + 1 < end:
                _stop(run, state, sums, done, time.perf_counter() - t0, interval, end - start, lr)
        done_in_interval = 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        _evaluate_and_record(run, state, tracker, bar, sums, interval, end, lr, time.perf_counter() - t0)


def _stop(run, state: TrainState, sums: Sums, done: int, elapsed: float, interval: int, length: int, lr: float):
    world = run.world
    rngs = [rng_state()]
    if world.distributed:
        gathered = [None] * world.size
        torch.distributed.all_gather_object(gathered, rngs[0])
        rngs = gathered
    totals = distributed.all_reduce_sum(sums.sums.clone()).cpu() if world.distributed else sums.sums.cpu()
    state.partial = Partial(step=done, names=sums.names, sums=totals, seen=sums.seen, finite=bool(sums.finite),
                            elapsed=elapsed, rng=rngs, lr=lr)
    checkpoint(run, state)
    distributed.barrier()
    sig = preemption.requested()
    raise preemption.Preempted(f"stopped by {sig.name if sig else 'a signal on another rank'} at epoch {interval}, "
                               f"step {done}/{length}; checkpoint {run.ckpt_dir / LAST}; resume=true continues from there")


class MethodScored(torch.nn.Module):
    """The student as its method scores it: ``method.predict`` over the student's ``evaluation_needs`` outputs."""

    def __init__(self, student, method):
        super().__init__()
        self.student, self.method = student, method

    def forward(self, images):
        return self.method.predict(run_model(self.student, images, self.method.evaluation_needs))


def scored_student(run) -> torch.nn.Module:
    """What the task evaluates: the student, or the student as its method scores it."""
    return MethodScored(run.student, run.method) if run.method.evaluation_needs else run.student


@torch.inference_mode()
def select_on_validation(run) -> dict:
    """The method's choices on the validation split (``Method.select_on_validation``), from the student's outputs
    over the whole split (eval mode; never the test set)."""
    needs = run.method.evaluation_needs or frozenset({"logits"})
    was_training = run.student.training
    run.student.eval()
    outputs, targets = [], []
    for batch in run.validation_loader:
        with autocast(run.precision, run.device):
            out = run_model(run.student, batch.images, needs)
        outputs.append(out)
        targets.append(batch.targets)
    run.student.train(was_training)
    joined = ModelOutput(logits=torch.cat([o.logits.float() for o in outputs]),
                         embedding=torch.cat([o.embedding.float() for o in outputs]) if outputs[0].embedding is not None
                         else None)
    return run.method.select_on_validation(joined, torch.cat(targets))


def _evaluate_and_record(run, state: TrainState, tracker, bar, sums: Sums, interval: int, end: int, lr: float,
                         seconds: float) -> None:
    world, device, task = run.world, run.device, run.task
    total = distributed.all_reduce_sum(torch.cat([sums.sums, torch.tensor([float(sums.seen)], device=device),
                                                  (~sums.finite).float().reshape(1)]))
    if total[-1] > 0:
        raise TrainingFailed(f"non-finite loss in epoch {interval}")
    seen = int(total[-2].item())
    if run.schedule.unit == "epoch":
        run.scheduler.step()
    means = (total[:-2] / max(seen, 1)).tolist()
    if world.distributed:  # evaluate and checkpoint with rank 0's BN statistics on every rank
        for buffer in run.student.buffers():
            torch.distributed.broadcast(buffer, 0)
    final = end >= run.schedule.total_steps  # the final evaluation also writes the task's own files
    selected = select_on_validation(run) if run.validation_loader is not None and run.method.needs_validation else {}
    metrics = task.evaluate(scored_student(run), run.test_loader, device, run.precision, run.data.num_classes,
                            sharded=world.distributed, out_dir=run.run_dir if final else None)
    state.train_time_s += seconds
    state.train_images += seen
    losses = dict(zip(sums.names, means[1:]))
    entry = {"epoch": interval, "lr": lr, "loss": means[0] if means else None, "losses": losses, **metrics,
             "images_per_s": round(seen / seconds, 1), "epoch_time_s": round(seconds, 3)}
    if run.schedule.unit == "iteration":
        entry["iteration"] = end
    if selected:
        entry["selected"] = selected
    state.history.append(entry)
    state.epoch, state.step = interval, end
    scores = "  ".join(f"{k} {v:.2f}" for k, v in metrics.items())
    bar.end_epoch(entry, scores.split("  ")[0])
    where = (f"epoch {interval}/{run.schedule.epochs}" if run.schedule.unit == "epoch"
             else f"iteration {end}/{run.schedule.total_steps}")
    log.info("%s  loss %.4f  %s  %s  lr %.4g  %.0f img/s", where, entry["loss"],
             " ".join(f"{k} {v:.4f}" for k, v in losses.items()), scores, lr, entry["images_per_s"])
    tracker.log({**{f"val/{k}": v for k, v in metrics.items()}, "lr": lr, "epoch": interval,
                 "train/images_per_s": entry["images_per_s"], "train/epoch_loss": entry["loss"],
                 **{f"train/epoch_{k}": v for k, v in losses.items()}}, step=end)
    primary = task.primary.name
    if world.main and task.is_better(metrics[primary], state.best):
        state.best = metrics[primary]
        save_best(run.ckpt_dir / "best.pt", run.student, interval, primary, metrics[primary])
    checkpoint(run, state)
