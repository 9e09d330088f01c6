"""Run one method on a real teacher/student pair the way the engine does, without the CLI.

``one_step`` builds the models from the zoo, sizes the method from a probe forward (the engine's own
``size_method``) and runs the engine's training step (``TrainStep``: ``prepare`` -> student/teacher forward,
views included -> method -> backward) with an optimiser that leaves the weights as they are (SGD, lr 0), so it
returns everything a gradient test needs. ``method_from_config`` builds a method from its shipped conf/method/<name>.yaml, so a
test also checks the published defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from kdbench.engine.build import size_method, weights_fingerprint
from kdbench.engine.optim import OPTIMIZERS
from kdbench.engine.step import TrainStep
from kdbench.methods import Batch, BuildContext, Method, Progress, build_method
from kdbench.models import create_model

CONF = Path(__file__).resolve().parents[1] / "conf"


def method_from_config(name: str, **overrides) -> Method:
    cfg = OmegaConf.load(CONF / "method" / f"{name}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return build_method(cfg)


@dataclass
class StepResult:
    method: Method
    student: torch.nn.Module
    teacher: torch.nn.Module | None
    terms: dict[str, torch.Tensor]
    loss: torch.Tensor


def make_context(teacher, num_classes: int, images: torch.Tensor, targets: torch.Tensor, cache_dir: Path,
                 student=None, validation=None) -> BuildContext:
    """``student``: the student being trained (methods that look ahead through it); ``validation``: (images,
    targets) of a validation split, served in batches of 8 as ``validation_batches`` (None: no split)."""
    def plain_train_batches():
        for start in range(0, len(targets), 8):
            sl = slice(start, start + 8)
            yield images[sl], targets[sl], torch.arange(len(targets))[sl]

    def validation_batches():
        val_images, val_targets = validation
        for start in range(0, len(val_targets), 8):
            sl = slice(start, start + 8)
            yield val_images[sl], val_targets[sl], torch.arange(len(val_targets))[sl]

    return BuildContext(num_classes=num_classes, train_targets=targets.clone(), device=torch.device("cpu"),
                        teacher=teacher, teacher_fingerprint=weights_fingerprint(teacher) if teacher is not None else None,
                        cache_dir=Path(cache_dir), plain_train_batches=plain_train_batches, student=student,
                        validation_batches=validation_batches if validation is not None else None)


def one_step(method: Method, cache_dir: Path, teacher: str = "resnet8x4", student: str = "resnet8x4",
             num_classes: int = 10, batch_size: int = 8, train_size: int = 32, epoch: int = 30, epochs: int = 240,
             image_size: int = 32, seed: int = 0) -> StepResult:
    """Build the pair, size the method, run one forward + backward on a random batch (no optimiser step)."""
    torch.manual_seed(seed)
    s_model = create_model(student, num_classes, image_size=image_size)
    t_model = None
    if method.uses_teacher:
        t_model = create_model(teacher, num_classes, image_size=image_size).eval().requires_grad_(False)
    images = torch.randn(train_size, 3, image_size, image_size)
    targets = torch.arange(train_size) % num_classes
    size_method(method, s_model, t_model, images[:2], make_context(t_model, num_classes, images, targets, cache_dir))
    idx = torch.arange(batch_size)
    views = {name: images[idx].flip(-1) for name in method.views}
    progress = Progress(epoch=epoch, epochs=epochs, step=(epoch - 1) * 4, steps_per_epoch=4)
    loss, terms = run_step(method, s_model, t_model, Batch(images[idx], targets[idx], idx, views), progress)
    return StepResult(method, s_model, t_model, terms, loss)


def assert_gradients_flow(result: StepResult) -> None:
    """Gradients reach the student (and every trainable part of the method); the teacher gets none."""
    assert torch.isfinite(result.loss), result.terms
    student_grads = [p.grad for p in result.student.parameters() if p.grad is not None]
    assert student_grads and any(g.abs().sum() > 0 for g in student_grads), "no gradient reached the student"
    for name, p in result.method.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"method parameter {name} got no gradient"
    if result.teacher is not None:
        for name, p in result.teacher.named_parameters():
            assert p.grad is None and not p.requires_grad, f"teacher parameter {name} was given a gradient"


def run_step(method: Method, student, teacher, batch: Batch, progress: Progress, train: bool = True):
    """``(loss, terms)`` of one engine training step whose update changes nothing (SGD, lr 0, no momentum or
    decay); the gradients stay on the parameters. ``train=False`` keeps the student and method in eval mode."""
    params = list(student.parameters()) + list(method.parameters())
    optimizer = torch.optim.SGD(params, lr=0.0)
    step = TrainStep(student, method, optimizer, OPTIMIZERS["sgd"], torch.device("cpu"), teacher=teacher)
    if train:
        step.train()
    return step(batch, progress)
