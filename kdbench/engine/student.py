"""Build the student: random init, a checkpoint file (``student.checkpoint``) or timm weights (``student.pretrained``).

A checkpoint loads in the teacher's formats (community ``{"model": ...}``, kdbench checkpoints, a bare state_dict,
DataParallel ``module.`` keys) and wins over ``pretrained`` when both are set. Pretrained weights whose head has
another number of classes keep timm's freshly initialised head (fine-tuning); ``info["head"]`` records it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..errors import ConfigError
from ..models import create_model, load_checkpoint

log = logging.getLogger("kdbench")


def build_student(cfg: DictConfig, num_classes: int, image_size: int,
                  create=create_model) -> tuple[torch.nn.Module, dict]:
    """(student on CPU in train mode, info for result.json: name, resolved, params, init[, head]); ``create``: the
    task's model factory (``create(name, num_classes, image_size=, pretrained=, role=)``)."""
    scfg = cfg.student
    checkpoint = scfg.get("checkpoint")
    pretrained = bool(scfg.get("pretrained", False)) and not checkpoint
    model = create(scfg.name, num_classes, image_size=image_size, pretrained=pretrained, role="student")
    info = {"name": str(scfg.name), "resolved": model.kdbench_name, "params": sum(p.numel() for p in model.parameters())}
    if checkpoint:
        info["init"] = str(Path(str(checkpoint)).expanduser())
        load_checkpoint(model, info["init"], key="student.checkpoint")
    elif pretrained:
        info["init"] = f"timm:{model.kdbench_name}"
        hosted = model.pretrained_cfg.get("num_classes")
        info["head"] = "pretrained" if hosted == num_classes else f"re-initialised ({num_classes} classes, pretrained {hosted})"
    else:
        info["init"] = "random"
    log.info("student %s (%s): init %s%s", scfg.name, model.kdbench_name, info["init"],
             f", head {info['head']}" if "head" in info else "")
    return model.cpu().train(), info


# ``student.init_from_teacher``: how the student starts from the frozen teacher's weights (same architecture).
FROM_TEACHER = ("equal",)


def initialise_from_teacher(student: torch.nn.Module, teacher: torch.nn.Module, scfg: DictConfig) -> str:
    """Set the student's weights from the teacher's as ``scfg.init_from_teacher`` says (``equal``: a copy, the
    default student of dinopl's random-teacher runs, ``s_init=teacher``); returns the init recorded in result.json."""
    how = str(scfg.init_from_teacher)
    if how not in FROM_TEACHER:
        raise ConfigError(f"student.init_from_teacher: unknown value '{how}'; valid: {', '.join(FROM_TEACHER)}, null")
    own, theirs = student.state_dict(), teacher.state_dict()
    if own.keys() != theirs.keys() or any(own[k].shape != theirs[k].shape for k in own):
        raise ConfigError(f"student.init_from_teacher: student {scfg.name} and the teacher have different "
                          "architectures; it needs the teacher's architecture (student=<the teacher's name>)")
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(theirs[key].to(value.device, value.dtype))
    log.info("student %s: initialised from the teacher (%s)", scfg.name, how)
    return f"teacher ({how})"
