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
