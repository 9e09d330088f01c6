"""The metrics of each task, as the tables show them, without importing torch.

``kdbench.tasks`` (which imports torch) is the source: ``TASKS[name].metrics``. ``KNOWN`` mirrors it for the
tasks kdbench ships so that ``kdbench-table`` starts fast (tests/test_results_detection.py keeps the two equal); a task
not listed here is read from ``kdbench.tasks``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

DEFAULT_TASK = "classification"


@dataclass(frozen=True)
class TaskMetrics:
    """A task's metrics (``(name, label)``, the primary first). ``compact``: the table shows the secondary metrics
    as one last-epoch mean column each (classification's "Top-5 (last, mean)"); otherwise every metric gets last
    and best columns with their std."""

    task: str
    metrics: tuple[tuple[str, str], ...]
    compact: bool = False

    @property
    def primary(self) -> tuple[str, str]:
        return self.metrics[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.metrics)

    def label(self, name: str) -> str:
        return dict(self.metrics).get(name, name)


KNOWN = {
    "classification": TaskMetrics("classification", (("top1", "top-1"), ("top5", "top-5")), compact=True),
    "detection": TaskMetrics("detection", (("ap", "AP"), ("ap50", "AP50"), ("ap75", "AP75"), ("ap_s", "AP_S"),
                                           ("ap_m", "AP_M"), ("ap_l", "AP_L"))),
    "probe": TaskMetrics("probe", (("knn_top1", "k-NN top-1"), ("linear_top1", "linear top-1"),
                                   ("knn_norm_top1", "k-NN top-1, standardised"),
                                   ("linear_norm_top1", "linear top-1, standardised")), compact=True),
}


@lru_cache(maxsize=None)
def task_metrics(task: str) -> TaskMetrics:
    """The metrics of ``task`` (a name of ``kdbench.tasks.TASKS``)."""
    if task in KNOWN:
        return KNOWN[task]
    from ..tasks import TASKS  # imports torch: only for tasks not mirrored above

    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'; valid: {', '.join(TASKS)}")
    return TaskMetrics(task, tuple((m.name, m.label) for m in TASKS[task].metrics))


def record_task(rec: dict) -> str:
    """The task of a result record: its resolved ``config.dataset.task`` (classification when absent)."""
    config = rec.get("config") if isinstance(rec.get("config"), dict) else {}
    dataset = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    return str(dataset.get("task") or DEFAULT_TASK)
