"""A model's weights from another's of the same architecture: the student initialisations of dinopl
(``configuration.py`` ``init_student_teacher``), tensor by tensor. Used to start a student from its teacher
(``student.init_from_teacher``, kdbench/engine/student.py) and a method's head from the teacher's head (``dino``)."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


# ``student.init_from_teacher``: how the student starts from the frozen teacher's weights (same architecture), as the
# student initialisations of dinopl (``configuration.py`` ``init_student_teacher``, ``--s_init``); ``*_vp`` adds the
# variance-preserving rescale (``--s_init_var_preserving``). ``student.init_scale`` is eps (neighborhood) or alpha
# (interpolated).
FROM_TEACHER = ("equal", "neighborhood", "neighborhood_vp", "interpolated", "interpolated_vp")


def mix_from_teacher(theta_t: torch.Tensor, theta_r: torch.Tensor, how: str, scale: float = 0.0) -> torch.Tensor:
    """A student tensor from the teacher's ``theta_t`` and a random draw ``theta_r`` of the same architecture:

        equal             theta_t
        neighborhood      theta_t + eps * theta_r                    (_vp: / sqrt(eps^2 + 1))
        interpolated      (1 - alpha) * theta_t + alpha * theta_r    (_vp: / sqrt(2 alpha^2 - 2 alpha + 1))

    with ``scale`` as eps or alpha (dinopl ``init_student_teacher``, same operations in the same order)."""
    if how == "equal":
        return theta_t.clone()
    base, preserving = how.removesuffix("_vp"), how.endswith("_vp")
    if base == "neighborhood":
        out = theta_t + scale * theta_r
        return out / math.sqrt(scale ** 2 + 1) if preserving else out
    if base == "interpolated":
        out = (1 - scale) * theta_t + scale * theta_r
        return out / math.sqrt(2 * (scale ** 2) - 2 * scale + 1) if preserving else out
    raise ConfigError(f"student.init_from_teacher: unknown value '{how}'; valid: {', '.join(FROM_TEACHER)}, null")


def check_from_teacher(how: str, scale: float, key: str = "student.init_from_teacher",
                       scale_key: str = "student.init_scale") -> None:
    """One-line errors for an unknown initialisation or a scale outside its range (eps >= 0, alpha in [0, 1])."""
    if how not in FROM_TEACHER:
        raise ConfigError(f"{key}: unknown value '{how}'; valid: {', '.join(FROM_TEACHER)}, null")
    if not math.isfinite(scale) or scale < 0 or (how.startswith("interpolated") and scale > 1):
        valid = "an alpha in [0, 1]" if how.startswith("interpolated") else "an eps >= 0"
        raise ConfigError(f"{scale_key}: {how} takes {valid}, got {scale}")
