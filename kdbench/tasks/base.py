"""The task interface the engine's phases call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Metric:
    name: str  # key in each history entry, e.g. "top1"; result.json keeps last_<name> and best_<name>
    label: str  # column heading in tables and logs
    higher_is_better: bool = True


class Task:
    """A task: ``metrics[0]`` is the primary metric (best checkpoint, best epoch, leaderboard ranking)."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]

    @property
    def primary(self) -> Metric:
        return self.metrics[0]

    def loaders(self, cfg, data, world, batch_per_rank: int, device, views: dict, channels_last: bool):
        """(train loader, its EpochSampler, test loader, loader kind): both loaders yield this task's batch type."""
        raise NotImplementedError

    def evaluate(self, model, loader, device, precision: str, num_classes: int, sharded: bool = False) -> dict[str, float]:
        """Every metric of ``metrics`` on the test loader, in percent; ``sharded``: summed over the process group."""
        raise NotImplementedError

    def is_better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.primary.higher_is_better else value < best

    def summarize(self, history: list[dict]) -> dict[str, Any]:
        """result.json's ``metrics``: ``last_<m>`` and ``best_<m>`` of every metric (best: the entry with the best
        primary metric, the earliest on ties) and ``best_epoch``."""
        names = [m.name for m in self.metrics]
        if not history:
            return {**{f"best_{n}": None for n in names}, "best_epoch": None, **{f"last_{n}": None for n in names}}
        sign = 1 if self.primary.higher_is_better else -1
        best = max(history, key=lambda h: (sign * h[self.primary.name], -h["epoch"]))
        return {**{f"best_{n}": best[n] for n in names}, "best_epoch": best["epoch"],
                **{f"last_{n}": history[-1][n] for n in names}}
