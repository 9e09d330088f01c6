"""Tasks: what a run learns and how it is scored. A task supplies its batch type, its loaders, its evaluator and
its metrics (names, which way is better, which one picks the best checkpoint and leads the table); the engine's
phases run any task. A dataset names its task (``dataset.task``, default ``classification``)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Metric, Task
from .classification import ClassificationTask
from .detection import DetectionTask
from .probe import ProbeTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "detection": DetectionTask,
                              "probe": ProbeTask}


def task_of(dataset_cfg) -> Task:
    name = str(dataset_cfg.get("task", "classification"))
    try:
        return TASKS[name](dataset_cfg)
    except KeyError:
        raise ConfigError(f"dataset.task: unknown task '{name}'; valid: {', '.join(TASKS)}") from None


__all__ = ["TASKS", "Metric", "Task", "task_of"]
