"""Build the student: random init, a checkpoint file (``student.checkpoint``) or timm weights (``student.pretrained``).

A checkpoint loads in the teacher's formats (community ``{"model": ...}``, kdbench checkpoints, a bare state_dict,
DataParallel ``module.`` keys) and wins over ``pretrained`` when both are set. Pretrained weights whose head has
another number of classes keep timm's freshly initialised head (fine-tuning); ``info["head"]`` records it.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..errors import ConfigError
from ..models import create_model, load_checkpoint
from ..models.mixing import FROM_TEACHER, check_from_teacher, mix_from_teacher  # noqa: F401  (re-exported)

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


def draw_seed(model: torch.nn.Module) -> int:
    """A seed that is a function of ``model``'s weights (the hash that keys teacher caches): the student's and the
    heads' random draws that the reference takes from the teacher's generator come from it."""
    from ..models.checkpoint import weights_fingerprint

    return int(weights_fingerprint(model)[:15], 16)


def fresh_draw(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Another random initialisation of ``model``'s architecture, drawn under ``seed`` (global RNG left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        name, classes = getattr(model, "kdbench_name", None), getattr(model, "num_classes", None)
        if name is not None and isinstance(classes, int):
            return create_model(name, classes)
        fresh = copy.deepcopy(model)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return fresh


def initialise_from_teacher(student: torch.nn.Module, teacher: torch.nn.Module, scfg: DictConfig) -> str:
    """Set the student's weights from the teacher's as ``scfg.init_from_teacher`` says; returns the init recorded in
    result.json.

    ``equal``: a copy of the teacher, parameters and buffers (the default student of dinopl's random-teacher runs,
    ``s_init=teacher``). ``neighborhood`` / ``interpolated`` (``_vp``: variance preserving), with ``init_scale`` as
    eps / alpha: every parameter by :func:`mix_from_teacher` from the teacher's and a random draw of the same
    architecture. The reference draws that one from the teacher's generator, after the teacher (``s_init_seed``
    unset); here it is a fresh initialisation under :func:`draw_seed` of the teacher, plus one: a function of the
    teacher (of ``teacher.seed`` for a random teacher), never the teacher's own draw again (which a run with
    ``seed`` equal to ``teacher.seed`` would otherwise give). The buffers (BN running statistics) stay the student's
    own fresh ones, as the reference's fresh copy keeps them. A student from weights (``student.checkpoint``,
    ``student.pretrained``) is refused: the teacher decides the student's start."""
    how = str(scfg.init_from_teacher)
    scale = float(scfg.get("init_scale") or 0.0)
    check_from_teacher(how, scale)
    if scfg.get("checkpoint") or scfg.get("pretrained"):
        raise ConfigError("student.init_from_teacher: the student starts from the teacher, not from weights of its "
                          "own; drop student.checkpoint / student.pretrained, or set student.init_from_teacher=null")
    own, theirs = student.state_dict(), teacher.state_dict()
    if own.keys() != theirs.keys() or any(own[k].shape != theirs[k].shape for k in own):
        raise ConfigError(f"student.init_from_teacher: student {scfg.name} and the teacher have different "
                          "architectures; it needs the teacher's architecture (student=<the teacher's name>)")
    with torch.no_grad():
        if how == "equal":
            for key, value in own.items():
                value.copy_(theirs[key].to(value.device, value.dtype))
        else:
            drawn = dict(fresh_draw(student, draw_seed(teacher) + 1).named_parameters())
            teacher_params = dict(teacher.named_parameters())
            for name, param in student.named_parameters():
                theta_t = teacher_params[name].to(param.device, param.dtype)
                param.copy_(mix_from_teacher(theta_t, drawn[name].to(param.device, param.dtype), how, scale))
    recorded = how if how == "equal" else f"{how}, scale {scale:g}"
    log.info("student %s: initialised from the teacher (%s)", scfg.name, recorded)
    return f"teacher ({recorded})"
